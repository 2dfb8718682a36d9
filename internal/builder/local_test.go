package builder

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/release"
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
	steps := p.wrap([]Step{{Name: "export", Run: func(context.Context) error { return nil }}})
	if err := steps[0].Run(context.Background()); err != nil {
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
	steps := p.wrap([]Step{
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
	})
	for _, s := range steps {
		_ = s.Run(context.Background())
	}
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

func TestLocalUserDataProxy(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	rel := release.Release{Repo: config.DefaultRunnerRepo, Version: "2.330.0", Arch: config.ArchX64,
		URL:    "https://github.com/actions/runner/releases/download/v2.330.0/actions-runner-linux-x64-2.330.0.tar.gz",
		SHA256: strings.Repeat("ab", 32)}
	spec := config.RunSpec{Arch: config.ArchX64, Base: config.BaseNoble, Builder: config.BuilderLocal}
	given := []byte("#cloud-config\n")

	// No proxy, or one the guest reaches as is: the user-data is kept.
	for _, proxy := range []string{"", "squid.internal:3128"} {
		spec.Proxy = proxy
		got, err := localUserData(log, spec, rel, given)
		if err != nil || !bytes.Equal(got, given) {
			t.Errorf("proxy %q: %q, %v; want the user-data unchanged", proxy, got, err)
		}
	}
	// A proxy on this host's loopback: the recipe is rendered for 10.0.2.2.
	spec.Proxy = "127.0.0.1:3128"
	got, err := localUserData(log, spec, rel, given)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(got, []byte("PROXY='10.0.2.2:3128'")) || bytes.Contains(got, []byte("127.0.0.1:3128")) {
		t.Errorf("the recipe does not use the guest's view of the proxy:\n%s", got)
	}
	// --user-data is the user's: kept as given.
	spec.UserDataFile = "/u"
	if got, err := localUserData(log, spec, rel, given); err != nil || !bytes.Equal(got, given) {
		t.Errorf("--user-data: %q, %v", got, err)
	}
	// An isolated guest reaches no proxy.
	spec.Isolated = true
	if _, err := localUserData(log, spec, rel, given); !errs.Is(err, errs.KindUsage) {
		t.Errorf("--proxy with --isolated: %v, want a usage error", err)
	}
}
