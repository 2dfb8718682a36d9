package builder

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
	"github.com/runner-image-builder/github-runner-image-builder/internal/release"
	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

func TestProgressIsQuietWithoutATerminal(t *testing.T) {
	var w testenv.LockedBuffer
	if p := newProgress(nil, nil, nil); p != nil {
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
	p.current().meter(10).reader(strings.NewReader("x"))
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
	p := newProgress(&w, func() (<-chan time.Time, func()) { return ticks, func() {} }, nil)
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

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *fakeClock) advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// TestUploadProgressShowsBytesAndRate: the local build's upload step (the
// copy of the exported file to --upload-clouds, here a fake cloud) shows,
// on its periodic lines, the bytes sent of the total and the rate, and on
// its last line the bytes and the mean rate, timed by the injected clock.
func TestUploadProgressShowsBytesAndRate(t *testing.T) {
	east := newFakeCloud("east")
	o := testOpenStack(t, east)
	dir := t.TempDir()
	spec := testSpec(t, func(s *config.RunSpec) {
		s.Builder, s.Output, s.UploadClouds = config.BuilderLocal, filepath.Join(dir, "out.qcow2"), []string{"east"}
		s.BaseImageFile = filepath.Join(dir, "base.qcow2")
	})
	data := bytes.Repeat([]byte("image"), 3<<20/5+1)[:3<<20] // 3 MiB
	partial := filepath.Join(dir, ".out.qcow2.partial")
	if err := os.WriteFile(partial, data, 0o600); err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{t: time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC)}
	var w testenv.LockedBuffer
	ticks := make(chan time.Time)
	b := &localBuild{spec: spec, log: discard(), partial: partial,
		info: newBuildInfo(spec, release.Release{Version: "2.330.0"}, clock.now(), o.Version),
		prog: newProgress(&w, func() (<-chan time.Time, func()) { return ticks, func() {} }, clock.now)}
	b.pub = &publication{connect: o.Connect, log: b.log, spec: spec, info: b.info,
		format: openstack.Image{DiskFormat: "qcow2", ContainerFormat: "bare"}}
	first := true
	east.onUploadRead = func() { // mid-copy, 4 s in: one periodic line
		if first {
			first = false
			clock.advance(4 * time.Second)
			ticks <- clock.now()
			waitLines(t, &w, 2)
		}
	}
	steps := []Step{{Name: "upload", Run: b.upload, Cleanup: b.pub.cleanupCopies}}
	if err := (&Runner{Log: discard(), Observe: b.prog.observe}).Run(context.Background(), steps); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(w.String()), "\n")
	if len(lines) != 3 || lines[0] != "==> upload" {
		t.Fatalf("progress lines:\n%s\nwant 3: the start, one periodic line, the end", w.String())
	}
	mid := regexp.MustCompile(`^    upload: 0:04, ([0-9.]+ (B|KiB|MiB)) of 3\.0 MiB, [0-9.]+ (B|KiB|MiB)/s$`).FindStringSubmatch(lines[1])
	if mid == nil || mid[1] == "0 B" || mid[1] == "3.0 MiB" {
		t.Errorf("periodic line %q: want the bytes sent so far (neither none nor all) of 3.0 MiB and a rate", lines[1])
	}
	if want := "    upload: done in 0:04, 3.0 MiB at 768.0 KiB/s"; lines[2] != want {
		t.Errorf("last line %q, want %q", lines[2], want)
	}
	if got := east.data[b.pub.copies.done["east"].image.ID]; !bytes.Equal(got, data) {
		t.Errorf("east got %d bytes, want the %d of the file", len(got), len(data))
	}
}

func TestBytesIEC(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 3 << 20: "3.0 MiB", 5 << 30: "5.0 GiB", 2 << 40: "2.0 TiB", 3 << 50: "3072.0 TiB",
	} {
		if got := bytesIEC(n); got != want {
			t.Errorf("bytesIEC(%d) = %q, want %q", n, got, want)
		}
	}
}

// The "output" step puts the manifest beside --output before the image;
// when a later step fails, its cleanup removes both: a failed build leaves
// nothing at --output.
func TestOutputStepPlacesTheManifest(t *testing.T) {
	for _, failed := range []bool{false, true} {
		dir := t.TempDir()
		out := filepath.Join(dir, "img.qcow2")
		partial := filepath.Join(dir, ".img.qcow2.grib-b1")
		if err := os.WriteFile(partial, []byte("image"), 0o600); err != nil {
			t.Fatal(err)
		}
		b := &localBuild{output: out, partial: partial, pub: &publication{manifest: []byte("{\"schema\": 1}\n")}}
		if err := b.place(context.Background()); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(ManifestBeside(out))
		if err != nil || string(data) != "{\"schema\": 1}\n" {
			t.Fatalf("beside %s: %q, %v", out, data, err)
		}
		if fi, _ := os.Stat(ManifestBeside(out)); fi.Mode().Perm() != 0o644 {
			t.Errorf("mode %v, want 0644", fi.Mode().Perm())
		}
		if err := b.unplace(context.Background(), failed); err != nil {
			t.Fatal(err)
		}
		entries, _ := os.ReadDir(dir)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		want := []string{"img.qcow2", "img.qcow2.manifest.json"}
		if failed {
			want = nil
		}
		if !slices.Equal(names, want) {
			t.Errorf("failed=%v: %s holds %q, want %q", failed, dir, names, want)
		}
	}
}
