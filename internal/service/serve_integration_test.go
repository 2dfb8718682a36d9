package service_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/faultproxy"
	"github.com/runner-image-builder/github-runner-image-builder/internal/service"
	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// settableClock is a time the test moves.
type settableClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *settableClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *settableClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type answer struct {
	code int
	body string
	err  error
}

func fetchAsync(ctx context.Context, url string) <-chan answer {
	out := make(chan answer, 1)
	go func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			out <- answer{err: err}
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			out <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		out <- answer{resp.StatusCode, string(body), err}
	}()
	return out
}

// awaitOr fails the test instead of hanging; the deadline asserts nothing.
func awaitOr[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(90 * time.Second):
		t.Fatalf("%s: still waiting after 90s (blocked)", what)
	}
	var zero T
	return zero
}

// serve's GET /v1/images/latest against the real Glance, through the fault
// proxy: a refused look-up is asked once per cache time however many GETs
// come, an image uploaded since is found after it, and a look-up Glance
// holds blocks neither /healthz nor the other requests' shutdown. No guest.
func TestServeLatestOnStack(t *testing.T) {
	testenv.Require(t)
	p := testenv.Prefix(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	admin := testenv.MustConnect(t, ctx, testenv.BuildCloud)
	proxy := buildCloudFaultProxy(t)
	name := config.ImageName(p, config.BaseNoble, config.ArchX64)
	t.Cleanup(func() { testenv.RemoveBuildLeftovers(t, p, []string{name}) })

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf("cloud: %s\nprefix: %s\nmatrix: {bases: [noble], arches: [x64]}\nstate_dir: %s\n",
		testenv.BuildCloud, p, filepath.Join(dir, "state"))), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := service.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	clk := &settableClock{t: time.Now()}
	s := &service.Service{Config: cfg, Catalog: service.NewCloudCatalog([]string{proxiedClouds(t, proxy)}, config.HostProxy{}, log),
		Log: log, Now: clk.Now, Environ: []string{"HOME=" + dir}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- s.Serve(sctx, ln, service.ServeOptions{NoSchedule: true}) }()
	base := "http://" + ln.Addr().String()
	get := func(path string) answer { t.Helper(); return awaitOr(t, fetchAsync(ctx, base+path), "GET "+path) }
	listRule := faultproxy.Rule{Method: "GET", Service: faultproxy.Image, Path: `^/v2/images$`}

	// Glance refuses the list (403 is never retried): one look-up, cached.
	forbid := listRule
	forbid.Fault = faultproxy.Status(http.StatusForbidden)
	h, err := proxy.Add(forbid)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if a := get("/v1/images/latest"); a.err != nil || a.code != http.StatusBadGateway {
			t.Errorf("GET %d with Glance refusing: %d %q %v, want 502", i+1, a.code, a.body, a.err)
		}
	}
	if h.Fired() != 1 {
		t.Errorf("4 GETs within the cache time listed images %d times, want 1", h.Fired())
	}
	h.Remove()

	id, err := testenv.UploadImage(ctx, admin.Image, name, writeSeed(t, dir), "raw", nil)
	if id != "" {
		t.Cleanup(func() { // RemoveBuildLeftovers, registered first, runs after and checks
			cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_ = images.Delete(cctx, admin.Image, id).ExtractErr()
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	if a := get("/v1/images/latest"); a.code != http.StatusBadGateway {
		t.Errorf("within the cache time the failure stands: %d %s", a.code, a.body)
	}
	clk.Add(service.DefaultLatestTTL)
	var doc service.LatestDocument
	a := get("/v1/images/latest")
	if a.code != http.StatusOK || json.Unmarshal([]byte(a.body), &doc) != nil || doc.Clouds[testenv.BuildCloud].ID != id {
		t.Errorf("after the cache time: %d %s, want image %s", a.code, a.body, id)
	}

	// Glance holds the next list: /healthz answers meanwhile.
	held := make(chan struct{}, 1)
	stall := listRule
	stall.Fault = faultproxy.Stall(0)
	stall.OnFire = func() {
		select {
		case held <- struct{}{}:
		default:
		}
	}
	if _, err := proxy.Add(stall); err != nil {
		t.Fatal(err)
	}
	clk.Add(service.DefaultLatestTTL)
	latest := fetchAsync(ctx, base+"/v1/images/latest")
	awaitOr(t, held, "the held image list")
	if a := get("/healthz"); a.err != nil || a.code != http.StatusOK || !strings.Contains(a.body, `"status": "ok"`) {
		t.Errorf("/healthz while Glance holds a look-up: %d %q %v", a.code, a.body, a.err)
	}
	select {
	case a := <-latest:
		t.Errorf("GET /v1/images/latest answered while Glance held it: %d %s", a.code, a.body)
	default:
	}

	// Only stopping ends the held look-up (not a deadline: it was held
	// all along), and its request gets the answer; Serve returns.
	stop()
	a = awaitOr(t, latest, "the held GET after stop")
	if a.err != nil || a.code != http.StatusBadGateway || !strings.Contains(a.body, "interrupted (exit 130)") {
		t.Errorf("the held GET after stop: %d %q %v, want a 502 ended by the stop", a.code, a.body, a.err)
	}
	if err := awaitOr(t, served, "Serve after stop"); err != nil {
		t.Errorf("Serve: %v", err)
	}
}

func writeSeed(t *testing.T, dir string) string {
	t.Helper()
	seed := filepath.Join(dir, "seed.raw")
	if err := os.WriteFile(seed, bytes.Repeat([]byte{1}, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	return seed
}
