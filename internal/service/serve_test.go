package service

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
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
	if health.Status != "ok" || health.Reason != "" || len(b.specs()) != 2 {
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

// gatedCatalog counts the calls and holds the next hold of them until
// release is closed, telling entered about each one it holds.
type gatedCatalog struct {
	Catalog
	entered chan struct{}
	release chan struct{}

	mu     sync.Mutex
	calls  int
	hold   int
	during func() // run at each call, if set (e.g. to move the clock)
}

func (c *gatedCatalog) ListImagesByName(ctx context.Context, cloud, name string, activeOnly bool) ([]openstack.Image, error) {
	c.mu.Lock()
	c.calls++
	held := c.hold > 0
	if held {
		c.hold--
	}
	during := c.during
	c.mu.Unlock()
	if during != nil {
		during()
	}
	if held {
		c.entered <- struct{}{}
		select {
		case <-c.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return c.Catalog.ListImagesByName(ctx, cloud, name, activeOnly)
}

func (c *gatedCatalog) holdNext(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hold = n
}

func (c *gatedCatalog) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

type response struct {
	code int
	body string
	err  error
}

// getAsync GETs url on its own goroutine.
func getAsync(ctx context.Context, url string) <-chan response {
	out := make(chan response, 1)
	go func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			out <- response{err: err}
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			out <- response{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		out <- response{code: resp.StatusCode, body: string(body), err: err}
	}()
	return out
}

// await receives from ch; the deadline only turns a hang into a failure
// (what is asserted is that it arrives at all, not when).
func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: still waiting after 30s (blocked)", what)
	}
	var zero T
	return zero
}

// serveOn starts s.Serve on a loopback port; stop cancels it and checks
// that it returned nil.
func serveOn(t *testing.T, s *Service, opts ServeOptions) (base string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln, opts) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := await(t, served, "Serve after cancel"); err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return "http://" + ln.Addr().String(), stop
}

// A look-up of GET /v1/images/latest that hangs in the cloud holds up
// neither /healthz nor the scheduler.
func TestServeLookupBlocksNeitherHealthNorSchedule(t *testing.T) {
	s, b, cat, _ := testService(t, testConfig(t, ""))
	s.Metrics = NewMetrics(true, s.Now)
	gc := &gatedCatalog{Catalog: cat, entered: make(chan struct{}, 8), release: make(chan struct{})}
	t.Cleanup(func() {
		select {
		case <-gc.release:
		default:
			close(gc.release)
		}
	})
	s.Catalog = gc
	b.gate, b.started = make(chan struct{}), make(chan string, 2)
	checked := make(chan struct{}, 1)
	s.Sleep = func(ctx context.Context, _ time.Duration) error {
		select { // the first check is done: say so, then wait for the end
		case checked <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return ctx.Err()
	}
	base, _ := serveOn(t, s, ServeOptions{})

	await(t, b.started, "the first scheduled build")
	gc.holdNext(4) // one look-up: 2 cells × 2 clouds
	latest := getAsync(t.Context(), base+"/v1/images/latest")
	for range 4 {
		await(t, gc.entered, "the look-up of GET /v1/images/latest")
	}

	r := await(t, getAsync(t.Context(), base+"/healthz"), "GET /healthz during a look-up")
	var health healthStatus
	if r.err != nil || r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &health) != nil || !health.Building {
		t.Errorf("/healthz during a look-up: %d %q %v", r.code, r.body, r.err)
	}

	close(b.gate) // the build ends; the scheduler records its check and sleeps
	await(t, checked, "the scheduler's check during a look-up")
	r = await(t, getAsync(t.Context(), base+"/healthz"), "GET /healthz after the check")
	health = healthStatus{}
	if r.err != nil || json.Unmarshal([]byte(r.body), &health) != nil || health.Building || health.LastCheck.IsZero() {
		t.Errorf("/healthz after the check: %d %q %v", r.code, r.body, r.err)
	}
	select {
	case r := <-latest:
		t.Fatalf("GET /v1/images/latest answered while its look-up was held: %d %s", r.code, r.body)
	default:
	}

	close(gc.release)
	r = await(t, latest, "GET /v1/images/latest after the release")
	if r.err != nil || r.code != http.StatusOK || !strings.Contains(r.body, `"grib-jammy-x64"`) {
		t.Errorf("/v1/images/latest: %d %q %v", r.code, r.body, r.err)
	}
}

// A look-up slower than DefaultLatestTTL is still reused for
// DefaultLatestTTL from its answer: dated from its start, it would be stale
// at once and every request would start another slow look-up.
func TestServeLatestCacheCountsFromTheAnswer(t *testing.T) {
	s, _, cat, clk := testService(t, testConfig(t, ""))
	for _, cloud := range []string{"c1", "c2"} {
		cat.add(cloud, openstack.Image{ID: cloud + "-1", Name: "grib-jammy-x64", CreatedAt: clk.Now()})
	}
	var once sync.Once
	gc := &gatedCatalog{Catalog: cat, during: func() { once.Do(func() { clk.Add(DefaultLatestTTL + time.Second) }) }}
	s.Catalog = gc
	base, _ := serveOn(t, s, ServeOptions{NoSchedule: true})
	for i := range 3 {
		r := await(t, getAsync(t.Context(), base+"/v1/images/latest"), "GET")
		if r.err != nil || r.code != http.StatusOK {
			t.Fatalf("GET %d: %d %q %v", i+1, r.code, r.body, r.err)
		}
	}
	if got, want := gc.count(), 4; got != want { // one look-up: 2 cells × 2 clouds
		t.Errorf("%d catalog calls after a slow look-up and two more GETs, want %d (one look-up)", got, want)
	}
}

// GET /v1/images/latest looks up once per DefaultLatestTTL, whether the
// look-up found images or failed.
func TestServeLatestCache(t *testing.T) {
	s, _, cat, clk := testService(t, testConfig(t, ""))
	for _, cloud := range []string{"c1", "c2"} {
		cat.add(cloud, openstack.Image{ID: cloud + "-1", Name: "grib-jammy-x64", CreatedAt: clk.Now()})
	}
	gc := &gatedCatalog{Catalog: cat}
	s.Catalog = gc
	base, _ := serveOn(t, s, ServeOptions{NoSchedule: true})
	const perLookup = 4 // 2 cells × 2 clouds
	if DefaultLatestTTL != 30*time.Second {
		t.Errorf("DefaultLatestTTL %s: the README says 30 s", DefaultLatestTTL)
	}
	down := errors.New("catalog down")

	steps := []struct {
		name      string
		advance   time.Duration // the clock moves first
		catErr    error
		gets      int
		wantCode  int
		wantCalls int // look-ups so far
	}{
		{"first look-up", 0, nil, 4, http.StatusOK, 1},
		{"within the cache time", DefaultLatestTTL - time.Second, nil, 3, http.StatusOK, 1},
		{"expired", time.Second, nil, 2, http.StatusOK, 2},
		{"a failure within the cache time is not seen", DefaultLatestTTL / 2, down, 2, http.StatusOK, 2},
		{"a failure after it", DefaultLatestTTL / 2, down, 1, http.StatusBadGateway, 3},
		{"the failure is cached", DefaultLatestTTL - time.Second, down, 4, http.StatusBadGateway, 3},
		{"recovered, still cached", 0, nil, 2, http.StatusBadGateway, 3},
		{"retried after the cache time", time.Second, nil, 3, http.StatusOK, 4},
	}
	for _, st := range steps {
		clk.Add(st.advance)
		cat.mu.Lock()
		cat.err = st.catErr
		cat.mu.Unlock()
		for i := range st.gets {
			r := await(t, getAsync(t.Context(), base+"/v1/images/latest"), st.name)
			if r.err != nil || r.code != st.wantCode {
				t.Errorf("%s: GET %d: %d %q %v, want %d", st.name, i+1, r.code, r.body, r.err, st.wantCode)
			}
			// The look-up's error (auth URLs, the cloud's answers) is for the
			// log; the client gets its kind and exit code.
			if r.code == http.StatusBadGateway && (strings.Contains(r.body, "catalog down") || !strings.Contains(r.body, "(exit 1); the log has the details")) {
				t.Errorf("%s: 502 body quotes the error or lacks its kind: %s", st.name, r.body)
			}
		}
		if got := gc.count(); got != st.wantCalls*perLookup {
			t.Errorf("%s: %d catalog calls, want %d look-ups (%d calls)", st.name, got, st.wantCalls, st.wantCalls*perLookup)
		}
	}
}

// syncBuffer is a log destination tests read while Serve writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// consoleTail is how a failed guest step's error ends (builder.GuestFailure).
const consoleTail = "\n--- last lines of the console ---\n[   12.3] cloud-init[600]: console-tail-line"

// /healthz says healthy or not and why in one line; the failed build's
// console tail goes to the log, never to /healthz.
func TestServeHealthSaysWhyNotTheConsole(t *testing.T) {
	s, b, _, _ := testService(t, testConfig(t, ""))
	var logBuf syncBuffer
	s.Log = slog.New(slog.NewTextHandler(io.MultiWriter(&logBuf, testWriter{t}), nil))
	b.fail = func(spec config.RunSpec, _ int) error {
		if spec.ImageName == "grib-jammy-x64" {
			return &errs.Error{Kind: errs.KindBuild, Err: errors.New("cloud-init: status error" + consoleTail)}
		}
		return nil
	}
	checked := make(chan struct{}, 1)
	s.Sleep = func(ctx context.Context, _ time.Duration) error {
		select {
		case checked <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return ctx.Err()
	}
	base, _ := serveOn(t, s, ServeOptions{})
	await(t, checked, "the first scheduled check")

	r := await(t, getAsync(t.Context(), base+"/healthz"), "GET /healthz")
	var health struct{ Status, Reason string }
	if r.err != nil || json.Unmarshal([]byte(r.body), &health) != nil {
		t.Fatalf("/healthz: %q %v", r.body, r.err)
	}
	if r.code != http.StatusServiceUnavailable || health.Status != "failing" {
		t.Errorf("/healthz after a failed build: %d %q, want 503 failing", r.code, health.Status)
	}
	want := "last check: 1 of 2 image builds failed: grib-jammy-x64 (exit 6); the log has the details"
	if health.Reason != want {
		t.Errorf("reason %q, want %q", health.Reason, want)
	}
	if strings.Contains(r.body, "console-tail-line") {
		t.Errorf("/healthz shows the console tail: %s", r.body)
	}
	if !strings.Contains(logBuf.String(), "console-tail-line") {
		t.Error("the log lacks the failed build's console tail")
	}
}

func TestCheckFailure(t *testing.T) {
	cell := func(name string, err error) CellResult {
		r := CellResult{Cell: Cell{ImageName: name}}
		if err != nil {
			r.Err, r.Error, r.ExitCode = err, oneLine(err.Error()), errs.ExitCode(err)
		}
		return r
	}
	guest := &errs.Error{Kind: errs.KindBuild, Err: errors.New("script failed" + consoleTail)}
	verify := &errs.Error{Kind: errs.KindVerify, Err: errors.New("check runner failed" + consoleTail)}
	tests := []struct {
		name string
		rep  *Report
		err  error
		want string
	}{
		{"ok", &Report{Cells: []CellResult{cell("a", nil)}}, nil, ""},
		{"one of two", &Report{Cells: []CellResult{cell("a", nil), cell("b", guest)}},
			errs.New(errs.KindPartial, "1 of 2 image builds failed: b: %v", guest),
			"last check: 1 of 2 image builds failed: b (exit 6); the log has the details"},
		{"all, skipped not counted", &Report{Cells: []CellResult{{Cell: Cell{ImageName: "s"}, Skipped: true}, cell("a", verify), cell("b", guest)}},
			verify, "last check: 2 of 2 image builds failed: a (exit 7), b (exit 6); the log has the details"},
		{"callback", &Report{Cells: []CellResult{cell("a", nil)}},
			errs.New(errs.KindCallback, "success callback /bin/hook exit status 1: callback-output-line"),
			"last check failed: callback-failed (exit 11); the log has the details"},
		{"no report", nil, errs.New(errs.KindUnreachable, "listing grib in cloud c1: reset"),
			"last check failed: unreachable (exit 3); the log has the details"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := checkFailure(tt.rep, tt.err)
			if got != tt.want {
				t.Errorf("checkFailure = %q, want %q", got, tt.want)
			}
			if strings.ContainsAny(got, "\n") || strings.Contains(got, "tail-line") || strings.Contains(got, "output-line") {
				t.Errorf("checkFailure quotes a message: %q", got)
			}
		})
	}
}

// addrListener has an address and no connections: Accept fails at once,
// so Serve returns as soon as it serves. No socket is opened.
type addrListener struct{ addr net.Addr }

func (l addrListener) Accept() (net.Conn, error) {
	return nil, errors.New("addrListener: no connections")
}
func (l addrListener) Close() error   { return nil }
func (l addrListener) Addr() net.Addr { return l.addr }

// Serve refuses an address other than loopback (--listen, or a name that
// resolved elsewhere) without serve.allow_remote, and warns with it.
func TestServeRemoteNeedsAllowRemote(t *testing.T) {
	tests := []struct {
		name, extra string
		addr        net.Addr
		wantErr     string // "" = past the check
		wantWarn    bool
	}{
		{"every interface refused", "", &net.TCPAddr{IP: net.IPv4zero, Port: 9180},
			"serving on 0.0.0.0:9180, not a loopback address: set serve.allow_remote: true in ", false},
		{"an interface refused", "", &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 9180}, "set serve.allow_remote: true", false},
		{"allowed with a warning", "serve: {allow_remote: true}\n", &net.TCPAddr{IP: net.IPv4zero, Port: 9180}, "", true},
		{"loopback", "", &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 9180}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, _, _ := testService(t, testConfig(t, tt.extra))
			var logBuf syncBuffer
			s.Log = slog.New(slog.NewTextHandler(io.MultiWriter(&logBuf, testWriter{t}), nil))
			err := s.Serve(t.Context(), addrListener{tt.addr}, ServeOptions{NoSchedule: true})
			if tt.wantErr != "" {
				if !errs.Is(err, errs.KindUsage) || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
					t.Errorf("Serve: %v, want a one-line usage error with %q", err, tt.wantErr)
				}
				if strings.Contains(logBuf.String(), "msg=serving") {
					t.Error("served after refusing")
				}
				return
			}
			if errs.Is(err, errs.KindUsage) {
				t.Errorf("Serve refused: %v", err)
			}
			warned := strings.Contains(logBuf.String(), "level=WARN") && strings.Contains(logBuf.String(), "serve.allow_remote") &&
				strings.Contains(logBuf.String(), "addr=0.0.0.0:9180")
			if warned != tt.wantWarn {
				t.Errorf("warned %v, want %v:\n%s", warned, tt.wantWarn, logBuf.String())
			}
		})
	}
}
