package service

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/build"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/manifest"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
	"github.com/runner-image-builder/github-runner-image-builder/internal/release"
)

// fakeCatalog is the images of every cloud, in memory.
type fakeCatalog struct {
	mu     sync.Mutex
	images map[string][]openstack.Image // cloud → images
	err    error
}

func newFakeCatalog() *fakeCatalog { return &fakeCatalog{images: map[string][]openstack.Image{}} }

func (c *fakeCatalog) ListImagesByName(_ context.Context, cloud, name string, activeOnly bool) ([]openstack.Image, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return nil, c.err
	}
	var out []openstack.Image
	for _, im := range c.images[cloud] {
		if im.Name == name && (!activeOnly || im.Status == openstack.ImageActive) {
			out = append(out, im)
		}
	}
	return out, nil
}

func (c *fakeCatalog) add(cloud string, im openstack.Image) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if im.Status == "" {
		im.Status = openstack.ImageActive
	}
	c.images[cloud] = append(c.images[cloud], im)
}

// fakeBuilder publishes an image per cloud into its catalog, unless fail
// says otherwise for this call.
type fakeBuilder struct {
	catalog *fakeCatalog
	now     func() time.Time
	version string
	// fail, if set, decides the outcome of call n (1-based, per image name).
	fail func(spec config.RunSpec, n int) error
	// gate, if set, is waited on before building (to hold a build open).
	gate chan struct{}
	// started is told about each build as it starts.
	started chan string

	mu        sync.Mutex
	calls     []config.RunSpec
	perName   map[string]int
	active    int
	maxActive int
	seq       int
}

func (b *fakeBuilder) Run(ctx context.Context, _ *slog.Logger, spec config.RunSpec, observe build.Observer) (build.Result, error) {
	b.mu.Lock()
	b.calls = append(b.calls, spec)
	if b.perName == nil {
		b.perName = map[string]int{}
	}
	b.perName[spec.ImageName]++
	n := b.perName[spec.ImageName]
	b.active++
	b.maxActive = max(b.maxActive, b.active)
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.active--
		b.mu.Unlock()
	}()
	if b.started != nil {
		b.started <- spec.ImageName
	}
	if b.gate != nil {
		select {
		case <-b.gate:
		case <-ctx.Done():
			return build.Result{}, ctx.Err()
		}
	}
	if b.fail != nil {
		if err := b.fail(spec, n); err != nil {
			return build.Result{}, err
		}
	}
	var res build.Result
	res.Runner.Version = b.version
	for _, cloud := range spec.PublishClouds() {
		b.mu.Lock()
		b.seq++
		id := fmt.Sprintf("%s-%s-%d", cloud, spec.ImageName, b.seq)
		b.mu.Unlock()
		data := fakeManifest(spec.ImageName)
		b.catalog.add(cloud, openstack.Image{ID: id, Name: spec.ImageName, CreatedAt: b.now(),
			Properties: map[string]string{RunnerVersionProperty: b.version, ManifestSHA256Property: manifest.SHA256(data)}})
		res.Images = append(res.Images, config.PublishedImage{Cloud: cloud, ID: id, Name: spec.ImageName,
			ManifestSHA256: manifest.SHA256(data), Manifest: data})
	}
	return res, nil
}

// fakeManifest is the manifest fakeBuilder's images of name hold.
func fakeManifest(name string) []byte {
	return []byte(fmt.Sprintf("{\"schema\": 1, \"image_name\": %q}\n", name))
}

func (b *fakeBuilder) specs() []config.RunSpec {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]config.RunSpec(nil), b.calls...)
}

type fakeInit struct {
	mu    sync.Mutex
	specs []config.InitSpec
	err   error
}

func (f *fakeInit) Init(_ context.Context, _ *slog.Logger, spec config.InitSpec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.specs = append(f.specs, spec)
	return f.err
}

type fakeResolver struct{ version string }

func (r fakeResolver) Resolve(_ context.Context, _ string, a config.Arch, _ string) (release.Release, error) {
	return release.Release{Version: r.version, Arch: a}, nil
}

// fakeClock is a settable time.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testConfig is a two-cell matrix (jammy, noble × x64) published to two
// clouds, with every directory in a temporary one; extra YAML is appended.
func testConfig(t *testing.T, extra string) *Config {
	t.Helper()
	dir := t.TempDir()
	defaults := []string{
		"cloud: build",
		"upload_clouds: [c1, c2]",
		"prefix: grib",
		"matrix: {bases: [jammy, noble], arches: [x64]}",
		"runner: {version: 2.330.0, sha256: " + strings.Repeat("c", 64) + "}",
		"retry: {min_delay: 1ms, max_delay: 4ms}",
		"state_dir: " + filepath.Join(dir, "state"),
		"cache_dir: " + filepath.Join(dir, "cache"),
		"schedule: {base_image_refresh: 0s}",
	}
	var lines []string
	for _, d := range defaults {
		key, _, _ := strings.Cut(d, ":")
		if !strings.HasPrefix(extra, key+":") && !strings.Contains(extra, "\n"+key+":") {
			lines = append(lines, d)
		}
	}
	data := strings.Join(lines, "\n") + "\n" + extra
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// testService wires a Service with fakes around cfg.
func testService(t *testing.T, cfg *Config) (*Service, *fakeBuilder, *fakeCatalog, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	cat := newFakeCatalog()
	b := &fakeBuilder{catalog: cat, now: clk.Now, version: "2.330.0"}
	var sleeps sleepLog
	s := &Service{
		Config: cfg, Builder: b, Catalog: cat, Now: clk.Now,
		Log:     slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Environ: []string{"PATH=" + os.Getenv("PATH")},
		Sleep:   sleeps.sleep,
	}
	return s, b, cat, clk
}

type sleepLog struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *sleepLog) sleep(ctx context.Context, d time.Duration) error {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
	return ctx.Err()
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// callbackScript writes a callback that records its arguments, stdin and
// environment in dir (call.N.args/.stdin/.env) and exits with the number in dir/exit (0 without).
func callbackScript(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "callback.sh")
	script := `#!/bin/sh
n=$(ls "` + dir + `" | grep -c '^call\..*\.args$')
printf '%s\n' "$@" > "` + dir + `/call.$n.args"
cat > "` + dir + `/call.$n.stdin"
env > "` + dir + `/call.$n.env"
exit "$(cat "` + dir + `/exit" 2>/dev/null || echo 0)"
`
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func readCall(t *testing.T, dir string, n int, ext string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("call.%d.%s", n, ext)))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// setCallbackExit makes callbackScript's callback in dir exit with code.
func setCallbackExit(t *testing.T, dir string, code int) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "exit"), []byte(fmt.Sprintln(code)), 0o600); err != nil {
		t.Fatal(err)
	}
}

func countCalls(t *testing.T, dir string) int {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "call.*.args"))
	return len(m)
}

type imageT = openstack.Image

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
