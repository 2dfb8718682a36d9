package service_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/builder"
	"github.com/runner-image-builder/github-runner-image-builder/internal/service"
)

// The phase durations come from the step runner's events, not from log
// lines: a runner with no logger at all, observed by the metrics, reports
// each step that succeeded once and none that failed or never ran.
func TestMetricsFromStepEvents(t *testing.T) {
	m := service.NewMetrics(false, nil)
	steps := []builder.Step{
		{Name: "connect", Run: func(context.Context) error { return nil }},
		{Name: "upload", Run: func(context.Context) error { return nil },
			Cleanup: func(context.Context, bool) error { return nil }},
		{Name: "publish", Run: func(context.Context) error { return errors.New("boom") }},
		{Name: "prune", Run: func(context.Context) error { return nil }},
	}
	if err := (&builder.Runner{Observe: m.ObserveStep}).Run(t.Context(), steps); err == nil {
		t.Fatal("the failing step did not fail the run")
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for phase, want := range map[string]bool{"connect": true, "upload": true, "publish": false, "prune": false} {
		line := `github_runner_image_builder_phase_duration_seconds_count{phase="` + phase + `"} 1`
		if got := strings.Contains(body, line); got != want {
			t.Errorf("metrics have %q: %v, want %v", line, got, want)
		}
	}
}
