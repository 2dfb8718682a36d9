package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
	"github.com/runner-image-builder/github-runner-image-builder/internal/release"
)

// memCatalog is a fake image catalog.
type memCatalog struct {
	mu     sync.Mutex
	images map[string][]openstack.Image
}

func (c *memCatalog) ListImagesByName(_ context.Context, cloud, name string, activeOnly bool) ([]openstack.Image, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []openstack.Image
	for _, im := range c.images[cloud] {
		if im.Name == name && (!activeOnly || im.Status == openstack.ImageActive) {
			out = append(out, im)
		}
	}
	return out, nil
}

// serviceConfig writes a builder host configuration for in-process tests:
// pinned runner (nothing fetched), two cells, two upload clouds.
func serviceConfig(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	var lines []string
	for _, d := range []string{
		"cloud: build",
		"upload_clouds: [c1, c2]",
		"prefix: grib",
		"matrix: {bases: [jammy, noble], arches: [x64]}",
		fmt.Sprintf("runner: {version: %s, sha256: %s, api_url: %q}", pinnedVersion, pinnedSHA, deadAPI),
		"state_dir: " + filepath.Join(dir, "state"),
		"cache_dir: " + filepath.Join(dir, "cache"),
		"schedule: {base_image_refresh: 0s}",
	} {
		key, _, _ := strings.Cut(d, ":")
		if !strings.HasPrefix(extra, key+":") && !strings.Contains(extra, "\n"+key+":") {
			lines = append(lines, d)
		}
	}
	data := strings.Join(lines, "\n") + "\n" + extra
	p := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// publishingBackend's Run publishes one image per cloud into cat, after
// waiting on gate (if set).
func publishingBackend(cat *memCatalog, gate <-chan struct{}, started chan<- string) Backend {
	var mu sync.Mutex
	n := 0
	return Backend{
		Catalog: cat,
		Builds: fakeBuilds(func(ctx context.Context, _ *slog.Logger, spec config.RunSpec, runner release.Release, userData []byte) ([]config.PublishedImage, error) {
			if started != nil {
				started <- spec.ImageName
			}
			if gate != nil {
				select {
				case <-gate:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			if runner.Version != pinnedVersion || !strings.HasPrefix(string(userData), "#!") {
				return nil, errors.New("the build did not get the prepared recipe")
			}
			var out []config.PublishedImage
			for _, cloud := range spec.PublishClouds() {
				mu.Lock()
				n++
				id := fmt.Sprintf("img-%d", n)
				mu.Unlock()
				cat.mu.Lock()
				cat.images[cloud] = append(cat.images[cloud], openstack.Image{ID: id, Name: spec.ImageName, Status: openstack.ImageActive,
					CreatedAt: time.Date(2026, 5, 1, 0, 0, n, 0, time.UTC), Properties: map[string]string{"grib_runner_version": runner.Version}})
				cat.mu.Unlock()
				out = append(out, config.PublishedImage{Cloud: cloud, ID: id, Name: spec.ImageName})
			}
			return out, nil
		}),
	}
}

// Two builds of the same configuration started together: one builds, the
// other exits at once with code 9 and names the image and the holder.
func TestBuildTwoAtOnce(t *testing.T) {
	cfg := serviceConfig(t, "")
	cat := &memCatalog{images: map[string][]openstack.Image{}}
	gate, started := make(chan struct{}), make(chan string, 2)
	first := make(chan result, 1)
	go func() { first <- runApp(t, testEnv(), publishingBackend(cat, gate, started), "build", "--config", cfg) }()
	<-started // the first build holds the locks

	second := runApp(t, testEnv(), publishingBackend(cat, nil, nil), "build", "--config", cfg)
	want := fmt.Sprintf("Error: build of grib-jammy-x64 in progress (pid %d); pass --wait to wait for it\n", os.Getpid())
	if second.code != 9 || second.stderr != want || second.stdout != "" {
		t.Errorf("second build: exit %d, stdout %q, stderr %q; want exit 9 and %q", second.code, second.stdout, second.stderr, want)
	}
	close(gate)
	r := <-first
	if r.code != 0 {
		t.Fatalf("first build: exit %d %s", r.code, r.stderr)
	}
	// The two cells build at once: which upload gets which ID is theirs to
	// race for, so the IDs are checked as a set.
	ids := regexp.MustCompile(`img-[0-9]+`)
	shape := ids.ReplaceAllString(r.stdout, "img-N")
	got := ids.FindAllString(r.stdout, -1)
	slices.Sort(got)
	if shape != "grib-jammy-x64  built  c1=img-N c2=img-N\ngrib-noble-x64  built  c1=img-N c2=img-N\n" ||
		!slices.Equal(got, []string{"img-1", "img-2", "img-3", "img-4"}) {
		t.Errorf("first build stdout %q", r.stdout)
	}
}

func TestLatestCommand(t *testing.T) {
	cfg := serviceConfig(t, "")
	cat := &memCatalog{images: map[string][]openstack.Image{}}
	if r := runApp(t, testEnv(), publishingBackend(cat, nil, nil), "build", "--config", cfg, "--format", "json"); r.code != 0 {
		t.Fatalf("build: %d %s", r.code, r.stderr)
	}
	// An older and a queued image must not win.
	cat.images["c1"] = append(cat.images["c1"],
		openstack.Image{ID: "older", Name: "grib-jammy-x64", Status: openstack.ImageActive, CreatedAt: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)},
		openstack.Image{ID: "queued", Name: "grib-jammy-x64", Status: openstack.ImageQueued, CreatedAt: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)})
	r := runApp(t, testEnv(), Backend{Catalog: cat}, "latest", "--config", cfg, "--format", "json")
	if r.code != 0 {
		t.Fatalf("latest: %d %s", r.code, r.stderr)
	}
	var doc struct {
		Clouds map[string]struct {
			ID     string `json:"id"`
			Tags   string `json:"tags"`
			Images []struct {
				ID   string `json:"id"`
				Tags string `json:"tags"`
			} `json:"images"`
		} `json:"clouds"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("%v: %s", err, r.stdout)
	}
	c1 := doc.Clouds["c1"]
	if len(doc.Clouds) != 2 || c1.ID == "older" || c1.ID == "queued" || c1.Tags != "x64,jammy" || len(c1.Images) != 2 || c1.Images[1].Tags != "x64,noble" {
		t.Errorf("latest json: %s", r.stdout)
	}
	r = runApp(t, testEnv(), Backend{Catalog: cat}, "latest", "--config", cfg)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 5 || !strings.HasPrefix(lines[0], "CLOUD") || !strings.Contains(lines[1], "c1     jammy  x64   grib-jammy-x64  "+c1.ID) {
		t.Errorf("latest text (%d):\n%s", r.code, r.stdout)
	}
	if r := runApp(t, testEnv(), Backend{Catalog: cat}, "latest"); r.code != 2 || !strings.Contains(r.stderr, "--config is required") {
		t.Errorf("latest without config: %d %s", r.code, r.stderr)
	}
	checkUsage(t, runApp(t, testEnv(), Backend{}, "build", "--config", "/nonexistent/c.yaml"), "--config")
}

func TestSetupCommand(t *testing.T) {
	cfg := serviceConfig(t, "")
	clouds := filepath.Join(t.TempDir(), "clouds.yaml")
	if err := os.WriteFile(clouds, []byte("clouds:\n  build: {auth: {auth_url: \"http://127.0.0.1:5000/v3\", username: u, password: p}}\n  c1: {auth: {auth_url: \"http://127.0.0.1:5000/v3\", username: u, password: p}}\n  c2: {auth: {auth_url: \"http://127.0.0.1:5000/v3\", username: u, password: p}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	args := []string{"setup", "--config", cfg, "--clouds-yaml", clouds, "--root", root, "--mode", "system",
		"--scheduler", "systemd", "--skip-init", "--binary", "/usr/bin/github-runner-image-builder"}
	r := runApp(t, testEnv(), Backend{}, args...)
	if r.code != 0 {
		t.Fatalf("setup: %d %s", r.code, r.stderr)
	}
	for _, want := range []string{
		"clouds.yaml  /etc/github-runner-image-builder/clouds.yaml (written)\n",
		"schedule     systemd github-runner-image-builder-grib\n",
		"wrote        " + filepath.Join(root, "etc/systemd/system/github-runner-image-builder-grib.service") + "\n",
		"not run      systemctl daemon-reload\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("setup output lacks %q:\n%s", want, r.stdout)
		}
	}
	r = runApp(t, testEnv(), Backend{}, args...)
	if r.code != 0 || !strings.Contains(r.stdout, "changes      none\n") || strings.Contains(r.stdout, "wrote") {
		t.Errorf("second setup (%d):\n%s", r.code, r.stdout)
	}
	checkUsage(t, runApp(t, testEnv(), Backend{}, append(args[:len(args):len(args)], "--mode", "root")...), "--mode")
}

// serve --listen on an address other than loopback needs
// serve.allow_remote: refused before anything listens.
func TestServeListenRemoteRefused(t *testing.T) {
	cfg := serviceConfig(t, "")
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0"} {
		checkUsage(t, runApp(t, testEnv(), Backend{}, "serve", "--config", cfg, "--no-schedule", "--listen", addr),
			"--listen: \""+addr+"\" is not a loopback address: set serve.allow_remote: true in "+cfg)
	}
}

// serve as a real process: it answers /healthz (failing: the cloud is not
// there) and /metrics, and SIGTERM stops it cleanly (exit 0) even while its
// first check fails to reach the cloud.
func TestServeProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "github-runner-image-builder")
	if out, err := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "../../cmd/github-runner-image-builder").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir := t.TempDir()
	clouds := filepath.Join(dir, "clouds.yaml")
	// Port 9 of loopback: nothing listens, the check fails fast.
	if err := os.WriteFile(clouds, []byte("clouds:\n  build: {auth: {auth_url: 'http://127.0.0.1:9/v3', username: u, password: p, project_name: p, user_domain_name: d, project_domain_name: d}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := serviceConfig(t, "upload_clouds: []\nclouds_file: "+clouds+"\n")

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--log-format", "json", "serve", "--config", cfg, "--listen", "127.0.0.1:0")
	cmd.Env = []string{"HOME=" + dir, "PATH=" + os.Getenv("PATH")}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan map[string]any, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				lines <- m
			} else {
				lines <- map[string]any{"raw": sc.Text()}
			}
		}
	}()
	waitLog := func(msg string) map[string]any {
		t.Helper()
		for m := range lines {
			t.Logf("serve: %v", m)
			if m["msg"] == msg {
				return m
			}
		}
		t.Fatalf("serve ended without logging %q (%v)", msg, cmd.Wait())
		return nil
	}
	addr, _ := waitLog("serving")["addr"].(string)
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("serving on %q", addr)
	}
	check := waitLog("scheduled build")
	if code, _ := check["exit_code"].(float64); code != 3 {
		t.Errorf("the first check should fail as unreachable (3): %v", check)
	}
	for _, get := range []struct {
		path string
		code int
		want string
	}{
		{"/healthz", http.StatusServiceUnavailable, `"reason": "last check failed: unreachable (exit 3); the log has the details"`},
		{"/metrics", http.StatusOK, `github_runner_image_builder_builds_total{result="success"} 0`},
	} {
		resp, err := http.Get("http://" + addr + get.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != get.code || !strings.Contains(string(body), get.want) {
			t.Errorf("GET %s: %d (want %d), lacks %q:\n%.400s", get.path, resp.StatusCode, get.code, get.want, body)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitLog("stopped")
	for range lines {
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("serve after SIGTERM: %v (want exit 0)", err)
	}
	if _, err := http.Get("http://" + addr + "/healthz"); err == nil {
		t.Error("still serving after SIGTERM")
	}
}
