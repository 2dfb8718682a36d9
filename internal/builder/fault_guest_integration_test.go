package builder

// The guest cells of the fault table (issue 7): faults at the steps that
// need a real guest ("ssh", "cloud-init", "script"), through both proxies:
// the HTTP faultproxy in front of the test OpenStack (every API call) and a
// faultproxy.TCP between the builder and the guest's sshd (the sshVia seam).
// The verify, manifest, clean, power-off and stop cells ride on TestGuestFaultRetried's
// build (see there). Guest boots: TestGuestFaultRetried 1, TestGuestFaultScriptConnectionLost 1,
// TestGuestFaultScriptInterrupted 1.
// Run with
//
//	GRIB_IT=1 go test -p 1 -run TestGuestFault ./internal/builder/ -timeout 40m

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/faultproxy"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// guestFaultEnv is one guest cell: its prefix, initialised in the build
// cloud through the HTTP proxy, and an OpenStack builder whose API calls
// cross the HTTP proxy and whose SSH crosses a TCP proxy.
type guestFaultEnv struct {
	t      *testing.T
	prefix string
	dir    string
	http   *faultproxy.Proxy
	ssh    *sshProxy
	o      *OpenStack
	spec   config.RunSpec
	recipe []byte
	direct *testenv.Cloud   // the build cloud, not through the proxy
	images *openstack.Cloud // the same, for image reads
	base   string           // the ID of the base image init uploaded

	mu    sync.Mutex
	watch func(msg string, attrs map[string]string) // sees every log record
	out   strings.Builder                           // the script's output
	onOut func(output string)                       // sees the output so far
}

// sshProxy starts a faultproxy.TCP in front of the builder's SSH address
// the first time the builder asks for it (the address is known only then).
type sshProxy struct {
	t  *testing.T
	mu sync.Mutex
	p  *faultproxy.TCP
}

func (s *sshProxy) via(addr string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p == nil {
		p, err := faultproxy.NewTCP(addr)
		if err != nil {
			s.t.Errorf("SSH fault proxy in front of %s: %v", addr, err)
			return addr
		}
		s.p = p
		s.t.Cleanup(func() { _ = p.Close() })
	}
	if s.p.Upstream() != addr {
		s.t.Errorf("the builder's SSH address changed from %s to %s", s.p.Upstream(), addr)
	}
	return s.p.Addr()
}

// proxy is the TCP proxy; it fails the test if SSH never went through one.
func (s *sshProxy) proxy() *faultproxy.TCP {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p == nil {
		s.t.Fatal("the builder never asked for an SSH address: no SSH fault proxy")
	}
	return s.p
}

// A recipe that needs no network. phone_home runs after cloud-init printed
// the host keys (so after the "ssh" step connected) and retries every 3 s
// against a port nothing listens on (the guest's own loopback): cloud-init
// keeps running about a minute longer, which is the "cloud-init" step's
// window for faults. Its failure is only logged: cloud-init ends "done".
const guestFaultRecipe = `#cloud-config
runcmd:
  - [sh, -c, 'echo grib-recipe-ran > /var/lib/grib-recipe-marker']
phone_home:
  url: http://127.0.0.1:9/grib-keeps-cloud-init-running
  post: [instance_id]
  tries: 20
`

const guestPlainRecipe = `#cloud-config
runcmd:
  - [sh, -c, 'echo grib-recipe-ran > /var/lib/grib-recipe-marker']
`

// guestScriptStarted is what the test scripts print first.
const guestScriptStarted = "grib-fault-script-started"

// newGuestFaultEnv initialises a prefix for a guest cell: its base image is
// the test guest image, so its builder servers boot a real guest.
func newGuestFaultEnv(t *testing.T, ctx context.Context, recipe, script, verify string) *guestFaultEnv {
	t.Helper()
	e := &guestFaultEnv{t: t, prefix: testenv.Prefix(t), dir: t.TempDir(), recipe: []byte(recipe)}
	imagePath, baseProps := testenv.RequireImage(t), map[string]string{testenv.GuestProperty: "true"}
	e.ssh = &sshProxy{t: t}

	var connect Connector
	var err error
	e.http, connect = proxiedConnector(t)
	env := map[string]string{"HOME": e.dir, "XDG_STATE_HOME": filepath.Join(e.dir, "state"), "TMPDIR": filepath.Join(e.dir, "tmp")}
	if err := os.Mkdir(env["TMPDIR"], 0o700); err != nil {
		t.Fatal(err)
	}
	e.o = &OpenStack{Connect: connect, Getenv: func(k string) string { return env[k] }, Version: "guest-fault",
		CleanupTimeout: 3 * time.Minute, Output: guestOutput{e}, sshVia: e.ssh.via}
	e.direct = testenv.MustConnect(t, ctx, testenv.BuildCloud)
	if e.images, err = openstack.Connect(ctx, testenv.BuildCloud, openstack.WithCloudsPaths(testenv.CloudsFile())); err != nil {
		t.Fatal(err)
	}

	userData := e.write("user-data", recipe)
	verifyFile := e.write("verify.sh", verify)
	e.spec = config.RunSpec{
		ImageName: config.ImageName(e.prefix, config.BaseNoble, config.ArchX64), Cloud: testenv.BuildCloud,
		Arch: config.ArchX64, Base: config.BaseNoble, Prefix: e.prefix, KeepRevisions: 1,
		UploadClouds: []string{testenv.BuildCloud}, Visibility: config.VisibilityPrivate,
		RunnerRepo: config.DefaultRunnerRepo, RunnerAPIURL: config.DefaultRunnerAPIURL,
		Timeouts: config.Timeouts{Boot: 30 * time.Minute, SSH: 10 * time.Minute, CloudInit: 15 * time.Minute,
			Script: 10 * time.Minute, Snapshot: 15 * time.Minute, Copy: 15 * time.Minute},
		Builder: config.BuilderOpenStack, Flavor: testenv.FlavorMin, Network: testenv.Network,
		UserDataFile: userData, VerifyScriptFile: verifyFile, SkipDefaultChecks: true,
		ScriptURL: testenv.ServeScript(t, script),
	}
	if err := e.spec.Validate(); err != nil {
		t.Fatal(err)
	}

	// What init makes (base image, keypair, security group) and what a
	// successful run publishes are removed at the end; anything else is a
	// leak, reported by testenv.Prefix's check.
	t.Cleanup(func() { removeGuestFaultResources(t, e.prefix) })
	err = e.o.Init(ctx, e.logger(), config.InitSpec{
		Cloud: testenv.BuildCloud, Arch: config.ArchX64, Prefix: e.prefix, Bases: []config.Base{config.BaseNoble},
		Builder: config.BuilderOpenStack, CacheDir: filepath.Join(e.dir, "cache"), BaseImageFile: imagePath,
		BaseImageProperties: baseProps,
	})
	if err != nil {
		t.Fatalf("init: %v", err)
	}
	base, err := testenv.ImagesNamed(ctx, e.direct.Image, config.BaseImageName(e.prefix, config.BaseNoble, config.ArchX64))
	if err != nil || len(base) != 1 {
		t.Fatalf("init's base image: %v, %v; want one", base, err)
	}
	e.base = base[0].ID
	e.assertOnlyInit(ctx) // init made one of each: keypair, security group, base image
	if err := e.http.Idle(ctx); err != nil {
		t.Fatal(err)
	}
	e.http.ClearRequests()
	return e
}

func (e *guestFaultEnv) write(name, content string) string {
	e.t.Helper()
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// run builds the image in-process.
func (e *guestFaultEnv) run(ctx context.Context) ([]config.PublishedImage, error) {
	return e.o.Build(ctx, e.logger(), testJob(e.t, e.spec, e.recipe))
}

// logger logs at debug level to the test log, through e.watch.
func (e *guestFaultEnv) logger() *slog.Logger {
	return slog.New(&watchHandler{
		Handler: slog.NewTextHandler(testWriter{e.t}, &slog.HandlerOptions{Level: slog.LevelDebug}),
		on: func(msg string, attrs map[string]string) {
			e.mu.Lock()
			w := e.watch
			e.mu.Unlock()
			if w != nil {
				w(msg, attrs)
			}
		},
	})
}

func (e *guestFaultEnv) setWatch(w func(msg string, attrs map[string]string)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.watch = w
}

func (e *guestFaultEnv) setOnOutput(f func(output string)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.onOut = f
}

func (e *guestFaultEnv) output() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.out.String()
}

// addRules adds HTTP proxy rules, named for the cell.
func (e *guestFaultEnv) addRules(cell string, rules ...faultproxy.Rule) []*faultproxy.Handle {
	e.t.Helper()
	var hs []*faultproxy.Handle
	for i, r := range rules {
		r.Name = fmt.Sprintf("%s #%d %s", cell, i+1, r.Fault)
		h, err := e.http.Add(r)
		if err != nil {
			e.t.Fatal(err)
		}
		hs = append(hs, h)
	}
	return hs
}

// assertOnlyInit fails the test unless the prefix holds, in every project,
// exactly what init made (one keypair, one security group, the base image)
// and the images with the IDs images: no server, no port, no other image.
// Call it before any cleanup helper.
func (e *guestFaultEnv) assertOnlyInit(ctx context.Context, images ...string) {
	e.t.Helper()
	assertLeft(e.t, ctx, e.prefix, wantLeft{keypair: true, securityGroup: true, images: append([]string{e.base}, images...)})
}

func guestInitResource(l testenv.Leak, prefix string, published bool) bool {
	switch l.Kind {
	case "keypair":
		return l.Name == config.KeypairName(prefix)
	case "security group":
		return l.Name == config.SecurityGroupName(prefix)
	case "image":
		return l.Name == config.BaseImageName(prefix, config.BaseNoble, config.ArchX64) ||
			(published && l.Name == config.ImageName(prefix, config.BaseNoble, config.ArchX64))
	}
	return false
}

// removeGuestFaultResources deletes init's resources and the run's published
// images, leaving anything else to testenv.Prefix's leak check.
func removeGuestFaultResources(t *testing.T, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	leaks, err := testenv.FindLeaks(ctx, prefix)
	if err != nil {
		t.Errorf("listing init resources: %v", err)
		return
	}
	expected := slices.DeleteFunc(leaks, func(l testenv.Leak) bool { return !guestInitResource(l, prefix, true) })
	if err := testenv.DeleteLeaks(ctx, expected); err != nil {
		t.Errorf("removing init resources: %v", err)
	}
}

// guestOutput collects the script's output and shows it to e.onOut.
type guestOutput struct{ e *guestFaultEnv }

func (g guestOutput) Write(p []byte) (int, error) {
	g.e.mu.Lock()
	g.e.out.Write(p)
	out, on := g.e.out.String(), g.e.onOut
	g.e.mu.Unlock()
	g.e.t.Logf("guest output: %s", strings.TrimRight(string(p), "\n"))
	if on != nil {
		on(out)
	}
	return len(p), nil
}

// watchHandler passes every record (message and attributes, those of the
// logger included) to on, then to Handler.
type watchHandler struct {
	slog.Handler
	on    func(msg string, attrs map[string]string)
	attrs []slog.Attr
}

func (h *watchHandler) Handle(ctx context.Context, r slog.Record) error {
	m := make(map[string]string, len(h.attrs)+r.NumAttrs())
	for _, a := range h.attrs {
		m[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	h.on(r.Message, m)
	return h.Handler.Handle(ctx, r)
}

func (h *watchHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &watchHandler{Handler: h.Handler.WithAttrs(as), on: h.on, attrs: append(slices.Clip(h.attrs), as...)}
}

func (h *watchHandler) WithGroup(name string) slog.Handler {
	return &watchHandler{Handler: h.Handler.WithGroup(name), on: h.on, attrs: h.attrs}
}

// faultTally is a concurrency-safe tally of named events.
type faultTally struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *faultTally) add(k string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[k] += n
}

func (c *faultTally) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[k]
}

// TestGuestFaultRetried: transient faults at each guest step of one build,
// and at the stop after them, all survived: one guest boot serves them all.
// At "ssh", the console read (it tells whether the cloud forbids the
// console; the host key is pinned, not read from it) gets 500, 503, a
// reset, 401 and a cut answer on successive calls. At "cloud-init", while
// cloud-init still runs, the SSH connection is reset; the redialled one is
// stalled for 5 s and then cut after 100 bytes to the builder. As "verify",
// "manifest" and "clean" start, the connection is reset: each redials once
// and does its work. As "power-off" starts it is reset again: the builder's key is
// gone by then, so no redial can log in, and the guest is stopped from
// outside by "stop" (Nova's os-stop), whose first call gets a 503. The
// build must publish, every fault must have fired, the script must have
// run once, and exactly init's resources, the new image and the operator's
// own image of the same name (untouched) remain.
func TestGuestFaultRetried(t *testing.T) {
	testenv.Require(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Minute)
	defer cancel()
	e := newGuestFaultEnv(t, ctx, guestFaultRecipe,
		"#!/bin/sh\nset -eu\necho "+guestScriptStarted+"\necho ran >> /var/lib/grib-fault-script-runs\n",
		"#!/bin/sh\nset -e\ngrep -qx grib-recipe-ran /var/lib/grib-recipe-marker\ntest \"$(cat /var/lib/grib-fault-script-runs)\" = ran\n")

	// The operator's own image of the same name: not ours, never pruned.
	foreign := uploadFaultImage(t, ctx, e.direct, e.dir, e.spec.ImageName, 4<<10)

	// "ssh": the console read (os-getConsoleOutput) once SSH is up is the
	// first server action of a build; os-stop and createImage come after
	// the guest steps.
	console := faultproxy.Rule{Method: http.MethodPost, Service: faultproxy.Compute, Path: `^/v2\.1/servers/[^/]+/action$`}
	at := func(n int, f faultproxy.Fault) faultproxy.Rule {
		r := console
		r.When, r.Fault = faultproxy.Nth(n), f
		return r
	}
	handles := e.addRules("ssh console",
		at(1, faultproxy.Status(http.StatusInternalServerError)),
		at(2, faultproxy.Status(http.StatusServiceUnavailable)),
		at(3, faultproxy.Reset()),
		at(4, faultproxy.Unauthorized()),
		at(5, faultproxy.CutResponse(100)),
	)
	// "stop": the os-stop action, told from the console reads by its body.
	handles = append(handles, e.addRules("stop", rule(callStop, faultproxy.Nth(1), faultproxy.Status(http.StatusServiceUnavailable)))...)

	// "cloud-init": faults on the SSH connection, driven by what the build
	// logs: the first status saying cloud-init runs resets the connection;
	// the first reconnect stalls the new one and arms a cut on it.
	// "verify", "manifest", "clean", "power-off": the connection is reset as each starts
	// (the step-started record is logged before the step runs). Lost
	// connections and reconnects are tallied by the step they happen in.
	var fired faultTally
	var once1, once2 sync.Once
	var step atomic.Value
	step.Store("")
	in := func(what string) string {
		switch st := step.Load().(string); st {
		case "verify", "manifest", "clean", "power-off":
			return what + " in " + st
		}
		return what
	}
	e.setWatch(func(msg string, attrs map[string]string) {
		switch {
		case msg == "step started":
			fired.add("step "+attrs["step"], 1)
			step.Store(attrs["step"])
			switch attrs["step"] {
			case "verify", "manifest", "clean", "power-off":
				fired.add("reset at "+attrs["step"], e.ssh.proxy().ResetAll())
			}
		case strings.HasPrefix(msg, "could not tell the guest to power off over SSH"):
			fired.add("stopped from outside", 1)
		case msg == "cloud-init status" && attrs["state"] == "running":
			once1.Do(func() {
				fired.add("running when reset", 1)
				fired.add("reset", e.ssh.proxy().ResetAll())
			})
		case msg == "SSH reconnected":
			fired.add(in("reconnected"), 1)
			once2.Do(func() {
				p := e.ssh.proxy()
				p.Stall(5 * time.Second)
				fired.add("cut armed", p.CutAfter(faultproxy.ToClient, 100))
			})
		case strings.HasPrefix(msg, "SSH connection to the guest lost"):
			fired.add(in("lost"), 1)
		}
	})

	imgs, err := e.run(ctx)
	e.setWatch(nil)
	if err != nil {
		t.Fatalf("the build failed (exit %d): %v", errs.KindOf(err).ExitCode(), err)
	}
	if len(imgs) != 1 || imgs[0].Cloud != testenv.BuildCloud {
		t.Fatalf("published %v, want one image in %s", imgs, testenv.BuildCloud)
	}
	for _, h := range handles {
		if h.Fired() != 1 {
			t.Errorf("rule %q fired %d times, want once (requests: %v)", h.Name(), h.Fired(), e.http.Requests())
		}
	}
	p := e.ssh.proxy()
	if fired.get("running when reset") != 1 || fired.get("reset") < 1 {
		t.Errorf("the SSH connection was not reset while cloud-init ran (resets: %d)", fired.get("reset"))
	}
	if fired.get("cut armed") != 1 || p.Held() == 0 || p.Resets() < 2 {
		t.Errorf("cut armed on %d connections, %d reads held by the stall, %d connections reset; want 1, some and 2",
			fired.get("cut armed"), p.Held(), p.Resets())
	}
	if fired.get("lost") != 2 || fired.get("reconnected") != 2 {
		t.Errorf("%d lost connections and %d reconnects logged before verify, want 2 and 2 (the reset and the cut)", fired.get("lost"), fired.get("reconnected"))
	}
	for _, st := range []string{"verify", "manifest", "clean", "power-off"} {
		if fired.get("reset at "+st) < 1 {
			t.Errorf("no SSH connection was open to reset as %q started: the cell proves nothing", st)
		}
		want := 1 // a redial, and the step did its work
		if st == "power-off" {
			want = 0 // the key is gone: no redial is tried
		}
		if fired.get("lost in "+st) != want || fired.get("reconnected in "+st) != want {
			t.Errorf("step %s: %d lost connections and %d reconnects logged, want %d and %d",
				st, fired.get("lost in "+st), fired.get("reconnected in "+st), want, want)
		}
	}
	if fired.get("stopped from outside") != 1 {
		t.Errorf("power-off logged %d times that the guest is stopped from outside, want once", fired.get("stopped from outside"))
	}
	if n := strings.Count(e.output(), guestScriptStarted); n != 1 {
		t.Errorf("the script started %d times, want once", n)
	}
	im, err := e.images.GetImage(ctx, imgs[0].ID)
	if err != nil || im.Name != e.spec.ImageName || im.Status != "active" {
		t.Errorf("published image %s: %+v, %v", imgs[0].ID, im, err)
	} else if im.Properties[PropManifestSHA256] != imgs[0].ManifestSHA256 || imgs[0].ManifestSHA256 == "" {
		t.Errorf("published image %s: %s %q, the build's %q: the manifest did not survive the reset", imgs[0].ID,
			PropManifestSHA256, im.Properties[PropManifestSHA256], imgs[0].ManifestSHA256)
	}
	if _, err := e.images.GetImage(ctx, foreign); err != nil {
		t.Errorf("the operator's image %s of the same name is gone: %v", foreign, err)
	}
	e.assertOnlyInit(ctx, imgs[0].ID, foreign)
}

// TestGuestFaultScriptConnectionLost: the SSH connection is reset while the
// user's script runs. The script is not run again (it may not be
// idempotent): exit 6 with an error whose first line says so, and the build
// leaves nothing: no server, no snapshot.
func TestGuestFaultScriptConnectionLost(t *testing.T) {
	testenv.Require(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Minute)
	defer cancel()
	e := newGuestFaultEnv(t, ctx, guestPlainRecipe,
		"#!/bin/sh\necho "+guestScriptStarted+"\nexec sleep 600\n",
		"#!/bin/sh\ntrue\n")
	var fired faultTally
	var once sync.Once
	e.setOnOutput(func(out string) {
		if strings.Contains(out, guestScriptStarted) {
			once.Do(func() { fired.add("reset", e.ssh.proxy().ResetAll()) })
		}
	})
	imgs, err := e.run(ctx)
	if code := errs.KindOf(err).ExitCode(); err == nil || code != 6 {
		t.Fatalf("exit %d (%v), want 6", code, err)
	}
	if len(imgs) != 0 {
		t.Errorf("a failed build returned images %v", imgs)
	}
	if fired.get("reset") < 1 {
		t.Fatal("the SSH connection was never reset: the cell proves nothing")
	}
	first, _, _ := strings.Cut(err.Error(), "\n")
	for _, want := range []string{"connection", "lost while the build script ran", "not run again", e.ssh.proxy().Addr()} {
		if !strings.Contains(first, want) {
			t.Errorf("error line %q does not say %q", first, want)
		}
	}
	var gf *GuestFailure
	if !errors.As(err, &gf) || strings.Contains(gf.Err.Error(), "\n") {
		t.Errorf("the guest step's error %v is not one line", err)
	}
	if n := strings.Count(e.output(), guestScriptStarted); n != 1 {
		t.Errorf("the script started %d times, want once", n)
	}
	e.assertOnlyInit(ctx) // no builder server, no snapshot
}

// TestGuestFaultScriptInterrupted: SIGINT while the user's script runs on
// a real guest ends the build with exit 130, goes no further than the
// script, and leaves nothing. The signal is real: sent to this process,
// which runs the build under signal.NotifyContext as the binary's main does.
func TestGuestFaultScriptInterrupted(t *testing.T) {
	testenv.Require(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Minute)
	defer cancel()
	e := newGuestFaultEnv(t, ctx, guestPlainRecipe, "#!/bin/sh\necho "+guestScriptStarted+"\nexec sleep 600\n", "#!/bin/sh\ntrue\n")

	runCtx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	var once sync.Once
	var signalled atomic.Bool
	e.setOnOutput(func(out string) {
		if strings.Contains(out, guestScriptStarted) {
			once.Do(func() {
				signalled.Store(true)
				_ = syscall.Kill(os.Getpid(), syscall.SIGINT)
			})
		}
	})
	var mu sync.Mutex
	var started []string
	e.setWatch(func(msg string, attrs map[string]string) {
		if msg == "step started" {
			mu.Lock()
			started = append(started, attrs["step"])
			mu.Unlock()
		}
	})
	imgs, err := e.run(runCtx)
	if !signalled.Load() {
		t.Fatalf("the script never printed %q: no signal was sent (%v)", guestScriptStarted, err)
	}
	if code := errs.KindOf(err).ExitCode(); err == nil || code != 130 {
		t.Fatalf("exit %d (%v), want 130", code, err)
	}
	if len(imgs) != 0 {
		t.Errorf("an interrupted build returned images %v", imgs)
	}
	mu.Lock()
	if i := slices.Index(started, "script"); i < 0 || i != len(started)-1 {
		t.Errorf("steps started %v: want the script last", started)
	}
	mu.Unlock()
	if n := strings.Count(e.output(), guestScriptStarted); n != 1 {
		t.Errorf("the script started %d times, want once", n)
	}
	e.assertOnlyInit(ctx) // no builder server, no snapshot
}
