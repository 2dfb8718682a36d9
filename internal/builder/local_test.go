package builder

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

func TestProgressIsQuietForJSONLogsAndNoTerminal(t *testing.T) {
	var w testenv.LockedBuffer
	if p := newProgress(&w, slog.New(slog.NewJSONHandler(&w, nil)), nil); p != nil {
		t.Error("progress with JSON logs")
	}
	if p := newProgress(nil, slog.New(slog.NewTextHandler(&w, nil)), nil); p != nil {
		t.Error("progress without a writer")
	}
	// A nil progress is usable and prints nothing.
	var p *progress
	steps := []Step{{Name: "export", Run: func(context.Context) error { return nil }}}
	if err := (&Runner{Observe: p.observe}).Run(context.Background(), steps); err != nil {
		t.Fatal(err)
	}
	p.printf("x")
	p.current().set("50%")
	p.start("x").end(nil)
	if w.String() != "" {
		t.Errorf("printed %q", w.String())
	}
	r, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer wr.Close()
	if Terminal(wr) != nil {
		t.Error("a pipe was taken for a terminal")
	}
}

func TestProgressLines(t *testing.T) {
	var w testenv.LockedBuffer
	ticks := make(chan time.Time)
	p := newProgress(&w, slog.New(slog.NewTextHandler(&w, nil)), func() (<-chan time.Time, func()) { return ticks, func() {} })
	steps := []Step{
		{Name: "lock", Run: func(context.Context) error { return nil }}, // no label: no lines
		{Name: "export", Run: func(context.Context) error {
			ticks <- time.Now() // no detail yet
			waitLines(t, &w, 2)
			p.current().set("42%")
			ticks <- time.Now()
			waitLines(t, &w, 3)
			return nil
		}},
		{Name: "ssh", Run: func(context.Context) error { return errors.New("boom") }},
	}
	_ = (&Runner{Observe: p.observe}).Run(context.Background(), steps)
	lines := strings.Split(strings.TrimSpace(w.String()), "\n")
	want := []string{"==> compress", "    compress: 0:00", "    compress: 0:00, 42%", "    compress: done in 0:00",
		"==> boot: waiting for SSH", "    boot: waiting for SSH: failed after 0:00"}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("progress lines:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if p.current() != nil {
		t.Error("a finished phase is still current")
	}
}

// waitLines waits until w holds n lines (the ticker goroutine printed).
func waitLines(t *testing.T, w *testenv.LockedBuffer, n int) {
	t.Helper()
	for range 500 {
		if strings.Count(w.String(), "\n") >= n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("progress printed %q, want %d lines", w.String(), n)
}

func TestElapsed(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0:00", 1499 * time.Millisecond: "0:01", 75 * time.Second: "1:15", 3725 * time.Second: "1:02:05",
	} {
		if got := elapsed(d); got != want {
			t.Errorf("elapsed(%s) = %q, want %q", d, got, want)
		}
	}
}
