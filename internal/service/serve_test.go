package service

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestServe(t *testing.T) {
	s, b, cat, _ := testService(t, testConfig(t, ""))
	s.Metrics = NewMetrics(true, s.Now)
	s.Sleep = nil // the real wait: the next check is an hour away
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln, ServeOptions{}) }()
	base := "http://" + ln.Addr().String()

	// The first check builds what is due (everything: nothing exists yet).
	var health healthStatus
	deadline := time.Now().Add(30 * time.Second)
	for health.LastCheck.IsZero() {
		if time.Now().After(deadline) {
			t.Fatal("no scheduled check within 30s")
		}
		code, body := get(t, base+"/healthz")
		if code != http.StatusOK {
			t.Fatalf("/healthz %d %s", code, body)
		}
		if err := json.Unmarshal([]byte(body), &health); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if health.Status != "ok" || health.LastError != "" || len(b.specs()) != 2 {
		t.Errorf("health %+v after %d builds", health, len(b.specs()))
	}

	code, body := get(t, base+"/metrics")
	for _, want := range []string{
		`github_runner_image_builder_builds_total{result="success"} 2`,
		`github_runner_image_builder_image_age_seconds{arch="x64",base="jammy",cloud="c1",name="grib-jammy-x64"} 0`,
		`github_runner_image_builder_runner_version_info{name="grib-jammy-x64",version="2.330.0"} 1`,
		"go_goroutines ",
	} {
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("/metrics (%d) lacks %q", code, want)
		}
	}

	code, body = get(t, base+"/v1/images/latest")
	var doc LatestDocument
	if err := json.Unmarshal([]byte(body), &doc); err != nil || code != http.StatusOK {
		t.Fatalf("/v1/images/latest %d %s", code, body)
	}
	if len(doc.Clouds) != 2 || len(doc.Clouds["c1"].Images) != 2 || doc.Clouds["c1"].Tags != "x64,jammy" {
		t.Errorf("latest %s", body)
	}
	if code, _ := get(t, base+"/nope"); code != http.StatusNotFound {
		t.Errorf("unknown path: %d", code)
	}

	// The look-up is cached (30s): a catalog failing now is not seen yet.
	cat.err = context.DeadlineExceeded
	if code, _ := get(t, base+"/v1/images/latest"); code != http.StatusOK {
		t.Errorf("cached latest: %d", code)
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("still listening after shutdown")
	}
}
