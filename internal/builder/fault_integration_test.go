package builder

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/faultproxy"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// faultResponseTimeout is the builder's wait for a response, and for a
// transfer's next byte, in the fault table (openstack.ResponseTimeout and
// TransferIdleTimeout in production): a stalled call or transfer fails after
// it and is retried like any other transient fault.
const faultResponseTimeout = 5 * time.Second

// The API calls of each guest-less step of the openstack builder, as the
// proxy sees them (Keystone under /v3, Nova under /v2.1, Glance under /v2,
// Neutron under /v2.0). Server actions are told apart by their body.
var (
	callAuth          = faultproxy.Rule{Method: http.MethodPost, Service: faultproxy.Identity, Path: `/v3/auth/tokens$`}
	callKeypair       = faultproxy.Rule{Method: http.MethodGet, Service: faultproxy.Compute, Path: `^/v2\.1/os-keypairs/[^/]+$`}
	callSecurityGroup = faultproxy.Rule{Method: http.MethodGet, Service: faultproxy.Network, Path: `^/v2\.0/security-groups$`}
	callFlavors       = faultproxy.Rule{Method: http.MethodGet, Service: faultproxy.Compute, Path: `^/v2\.1/flavors`}
	callNetworks      = faultproxy.Rule{Method: http.MethodGet, Service: faultproxy.Network, Path: `^/v2\.0/networks$`}
	callImages        = faultproxy.Rule{Method: http.MethodGet, Service: faultproxy.Image, Path: `^/v2/images$`}
	callCreate        = faultproxy.Rule{Method: http.MethodPost, Service: faultproxy.Compute, Path: `^/v2\.1/servers$`}
	callWait          = faultproxy.Rule{Method: http.MethodGet, Service: faultproxy.Compute, Path: `^/v2\.1/servers/` + uuidRE + `$`}
	callStop          = serverAction("os-stop")
	callCreateImage   = serverAction("createImage")
	callDownload      = faultproxy.Rule{Method: http.MethodGet, Service: faultproxy.Image, Path: `^/v2/images/[^/]+/file$`}
	callNewImage      = faultproxy.Rule{Method: http.MethodPost, Service: faultproxy.Image, Path: `^/v2/images$`}
	callUpload        = faultproxy.Rule{Method: http.MethodPut, Service: faultproxy.Image, Path: `^/v2/images/[^/]+/file$`}
	callPublish       = faultproxy.Rule{Method: http.MethodPatch, Service: faultproxy.Image, Path: `^/v2/images/[^/]+$`}
	callPrune         = faultproxy.Rule{Method: http.MethodDelete, Service: faultproxy.Image, Path: `^/v2/images/[^/]+$`}
	callDelete        = faultproxy.Rule{Method: http.MethodDelete, Service: faultproxy.Compute, Path: `^/v2\.1/servers/` + uuidRE + `$`}
)

// serverAction matches Nova's server action named action (the key of its
// JSON body): os-stop, createImage, os-getConsoleOutput.
func serverAction(action string) faultproxy.Rule {
	return faultproxy.Rule{Method: http.MethodPost, Service: faultproxy.Compute, Path: `^/v2\.1/servers/[^/]+/action$`,
		Body: `^\s*\{\s*"` + regexp.QuoteMeta(action) + `"`}
}

// uuidRE matches a server ID (not "detail", the list call's path).
const uuidRE = `[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`

// The faults of the table. Each hits one call once: the builder must retry
// it (or, for a create, find what it made) and succeed.
var transientFaults = []struct {
	name  string
	fault faultproxy.Fault
}{
	{"500", faultproxy.Status(http.StatusInternalServerError)},
	{"503", faultproxy.Status(http.StatusServiceUnavailable)},
	{"reset", faultproxy.Reset()},
	{"stall", faultproxy.Stall(0)},       // held until the client gives up
	{"cut", faultproxy.CutResponse(100)}, // the call was made; its reply breaks off
	{"401", faultproxy.Unauthorized()},   // an expired token: re-authenticate
}

// uploadFaults hit an upload in flight (the snapshot is 1 MiB).
var uploadFaults = []struct {
	name  string
	fault faultproxy.Fault
}{
	{"500 mid-upload", faultproxy.StatusAfter(http.StatusInternalServerError, 256<<10)},
	{"503", faultproxy.Status(http.StatusServiceUnavailable)},
	{"reset", faultproxy.Reset()},
	{"stall", faultproxy.Stall(0)},
	{"cut upload", faultproxy.CutRequest(256 << 10)},
	{"401 mid-upload", faultproxy.StatusAfter(http.StatusUnauthorized, 256<<10)},
}

// faultCell is one row of the table: rules to add, and what must follow.
type faultCell struct {
	step  string
	fault string
	rules []faultproxy.Rule
	// want is the exit code: 0 (published, the old revision pruned), 10
	// (published, the old revision kept) or a failure's (nothing published,
	// nothing of the build left).
	want int
	// msg must appear in the error (for a failure).
	msg string
	// keepsOld: published, but the old revisions were not pruned.
	keepsOld bool
	// leavesServer: the cloud refused to delete the builder; the error names
	// it and the test removes it.
	leavesServer bool
	// signal, if set, is sent to this process when the rule fires (the
	// call is held, never forwarded): the build runs under
	// signal.NotifyContext as the binary's main does.
	signal syscall.Signal
	// atStep, if set, sends signal when that step starts (for steps that
	// make no API call); withGuest keeps the guest steps in the build.
	atStep    string
	withGuest bool
}

func rule(base faultproxy.Rule, when faultproxy.When, f faultproxy.Fault) faultproxy.Rule {
	base.When, base.Fault = when, f
	return base
}

// faultCells is the table: every fault at every guest-less step once (the
// builder retries and succeeds), then faults that do not go away (a clear
// error, its exit code, nothing left).
func faultCells() []faultCell {
	var cells []faultCell
	transient := func(step string, call faultproxy.Rule, when faultproxy.When) {
		for _, f := range transientFaults {
			cells = append(cells, faultCell{step: step, fault: f.name, rules: []faultproxy.Rule{rule(call, when, f.fault)}})
		}
	}
	transient("create", callCreate, faultproxy.Nth(1))
	transient("wait", callWait, faultproxy.Nth(2)) // the first is create's read-back, the second a poll
	// "stop" is Nova's os-stop (and the wait for SHUTOFF); the guest's own
	// shutdown is the guest step "power-off" (fault_guest_integration_test.go).
	transient("stop", callStop, faultproxy.Nth(1))
	transient("snapshot", callCreateImage, faultproxy.Nth(1))
	transient("copy download", callDownload, faultproxy.Nth(1))
	// A download that stops in the middle: the builder's transfer idle
	// timeout ends it, and it starts again.
	cells = append(cells, faultCell{step: "copy download", fault: "stall mid-body",
		rules: []faultproxy.Rule{rule(callDownload, faultproxy.Nth(1), faultproxy.StallResponse(256<<10))}})
	transient("copy create", callNewImage, faultproxy.Nth(1))
	for _, f := range uploadFaults {
		cells = append(cells, faultCell{step: "copy upload", fault: f.name, rules: []faultproxy.Rule{rule(callUpload, faultproxy.Nth(1), f.fault)}})
	}
	transient("publish", callPublish, faultproxy.Nth(1))
	transient("prune", callPrune, faultproxy.Nth(1))
	transient("delete", callDelete, faultproxy.Nth(1))

	every := faultproxy.Every()
	// The steps before the server: a fault that does not go away fails the
	// build there, with its exit code, the step named, nothing made.
	cells = append(cells,
		faultCell{step: "connect", fault: "500 always", want: 3, msg: "step connect: cloud \"" + testenv.BuildCloud + "\": Keystone at",
			rules: []faultproxy.Rule{rule(callAuth, every, faultproxy.Status(500))}},
		faultCell{step: "connect", fault: "401 always", want: 4, msg: "step connect: cloud \"" + testenv.BuildCloud + "\" refused the credentials",
			rules: []faultproxy.Rule{rule(callAuth, every, faultproxy.Unauthorized())}},
		faultCell{step: "keypair", fault: "500 always", want: 6, msg: "step keypair: ",
			rules: []faultproxy.Rule{rule(callKeypair, every, faultproxy.Status(500))}},
		faultCell{step: "security group", fault: "503 always", want: 6, msg: "step security group: ",
			rules: []faultproxy.Rule{rule(callSecurityGroup, every, faultproxy.Status(503))}},
		faultCell{step: "flavor", fault: "500 always", want: 6, msg: "step flavor and network: ",
			rules: []faultproxy.Rule{rule(callFlavors, every, faultproxy.Status(500))}},
		faultCell{step: "network", fault: "reset always", want: 3, msg: "step flavor and network: ",
			rules: []faultproxy.Rule{rule(callNetworks, every, faultproxy.Reset())}},
		faultCell{step: "base image", fault: "500 always", want: 6, msg: "step base image: ",
			rules: []faultproxy.Rule{rule(callImages, every, faultproxy.Status(500))}},
		faultCell{step: "stop", fault: "500 always", want: 6, msg: "step stop: ",
			rules: []faultproxy.Rule{rule(callStop, every, faultproxy.Status(500))}},
	)
	cells = append(cells,
		faultCell{step: "create", fault: "500 always", want: 6, msg: "creating builder server",
			rules: []faultproxy.Rule{rule(callCreate, every, faultproxy.Status(500))}},
		faultCell{step: "create", fault: "401 always", want: 4, msg: "refused by the cloud",
			rules: []faultproxy.Rule{rule(callCreate, every, faultproxy.Unauthorized())}},
		// Five 503s in a row exhaust the read-back's retries; the cleanup's
		// reads that follow succeed, so the server is seen gone.
		faultCell{step: "wait", fault: "503 five times", want: 6, msg: "creating builder server",
			rules: []faultproxy.Rule{rule(callWait, faultproxy.FirstN(5), faultproxy.Status(503))}},
		faultCell{step: "snapshot", fault: "reset always", want: 8, msg: "snapshotting the builder",
			rules: []faultproxy.Rule{rule(callCreateImage, every, faultproxy.Reset())}},
		faultCell{step: "copy download", fault: "cut always", want: 8, msg: "downloading snapshot",
			rules: []faultproxy.Rule{rule(callDownload, every, faultproxy.CutResponse(64<<10))}},
		faultCell{step: "copy upload", fault: "cut always", want: 8, msg: "uploading image",
			rules: []faultproxy.Rule{rule(callUpload, every, faultproxy.CutRequest(256<<10))}},
		faultCell{step: "publish", fault: "500 always", want: 8, msg: "publishing image",
			rules: []faultproxy.Rule{rule(callPublish, every, faultproxy.Status(500))}},
		faultCell{step: "prune", fault: "500 always", want: 10, msg: "not all pruned", keepsOld: true,
			rules: []faultproxy.Rule{rule(callPrune, every, faultproxy.Status(500))}},
		faultCell{step: "delete", fault: "500 always", want: 10, msg: "sweep --prefix", leavesServer: true,
			rules: []faultproxy.Rule{rule(callDelete, every, faultproxy.Status(500))}},
	)
	// SIGINT and SIGTERM at each step, while one of its calls is in flight.
	// Cleanups run on their own context: a signal during the builder's
	// deletion changes nothing; one during pruning keeps what was published.
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		for _, at := range []struct {
			step string
			call faultproxy.Rule
			when faultproxy.When
			want int
		}{
			{"create", callCreate, faultproxy.Nth(1), 130},
			{"wait", callWait, faultproxy.Nth(2), 130},
			{"stop", callStop, faultproxy.Nth(1), 130},
			{"snapshot", callCreateImage, faultproxy.Nth(1), 130},
			{"copy download", callDownload, faultproxy.Nth(1), 130},
			{"copy upload", callUpload, faultproxy.Nth(1), 130},
			{"publish", callPublish, faultproxy.Nth(1), 130},
			{"prune", callPrune, faultproxy.Nth(1), 130},
			{"delete", callDelete, faultproxy.Nth(1), 0},
		} {
			cells = append(cells, faultCell{step: at.step, fault: sig.String(), want: at.want, msg: "interrupted", signal: sig,
				keepsOld: at.step == "prune", rules: []faultproxy.Rule{rule(at.call, at.when, faultproxy.Stall(0))}})
		}
		// The ssh step of a server with no OS: it waits for an sshd that
		// never answers (the guest-booting tests interrupt cloud-init and
		// the script).
		cells = append(cells, faultCell{step: "ssh", fault: sig.String(), want: 130, msg: "interrupted", signal: sig,
			atStep: "ssh", withGuest: true})
	}
	return cells
}

// TestFaultTable drives guest-less builds (a base image with no OS: the test
// Nova makes its server ACTIVE at once and snapshots it as it is) through
// internal/faultproxy, one fault per build, and checks after each: the exit
// code, the images of the name in both publish clouds (the operator's own
// image of the same name is never touched; the previous revision goes only
// when a new one is published), no builder server, no scratch file.
func TestFaultTable(t *testing.T) {
	testenv.Require(t)
	prefix := testenv.Prefix(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.ResponseHeaderTimeout = faultResponseTimeout
	proxy, connect := proxiedConnector(t, openstack.WithHTTPClient(&http.Client{Transport: transport}),
		openstack.WithTransferIdleTimeout(faultResponseTimeout))

	dir := t.TempDir()
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	imageName := config.ImageName(prefix, config.BaseNoble, config.ArchX64)
	publish := []string{testenv.BuildCloud, testenv.UploadCloud}
	direct := map[string]*testenv.Cloud{}
	foreign := map[string]string{}
	for _, name := range publish {
		direct[name] = testenv.MustConnect(t, ctx, name)
		// The operator's own image of the same name: not ours, never deleted.
		foreign[name] = uploadFaultImage(t, ctx, direct[name], dir, imageName, 4<<10)
	}
	baseImage := uploadFaultBase(t, ctx, direct[testenv.BuildCloud], dir, prefix)
	verify := filepath.Join(dir, "verify.sh")
	if err := os.WriteFile(verify, []byte("#!/bin/sh\ntrue\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"HOME": dir, "XDG_STATE_HOME": filepath.Join(dir, "state"), "TMPDIR": tmp}
	o := &OpenStack{Connect: connect, Getenv: func(k string) string { return env[k] }, Version: "fault-table",
		CleanupTimeout: 2 * time.Minute, withoutGuest: true}
	spec := config.RunSpec{
		ImageName: imageName, Cloud: testenv.BuildCloud, Arch: config.ArchX64, Base: config.BaseNoble,
		Prefix: prefix, KeepRevisions: 1, UploadClouds: publish, Visibility: config.VisibilityPrivate,
		RunnerRepo: config.DefaultRunnerRepo, RunnerAPIURL: config.DefaultRunnerAPIURL, Timeouts: config.DefaultTimeouts(),
		Builder: config.BuilderOpenStack, Flavor: testenv.FlavorMin, Network: testenv.Network,
		UserDataFile: "/dev/null", VerifyScriptFile: verify, SkipDefaultChecks: true,
	}
	// What the build may leave by design: the prefix's keypair and security
	// group (the first build makes them), the operator's images, the base
	// image and our current revisions. At the end those alone are removed,
	// after the last cell counted them; anything else is left for
	// testenv.Prefix's check to report.
	current := map[string][]string{}
	expected := func(servers int) wantLeft {
		w := wantLeft{servers: servers, keypair: true, securityGroup: true, images: []string{baseImage}}
		for _, name := range publish {
			w.images = append(w.images, foreign[name])
			w.images = append(w.images, current[name]...)
		}
		return w
	}
	t.Cleanup(func() { removeExpectedLeft(t, prefix, expected(0)) })

	// current are our revisions in each cloud (the newest is the one
	// consumers use): what a failed build must leave, and what the next
	// successful one prunes down to its own.
	build := func(t *testing.T, ctx context.Context, s config.RunSpec, c faultCell, onLog func(string, map[string]string), ledger *Ledger) ([]config.PublishedImage, error) {
		var h slog.Handler = slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})
		if onLog != nil {
			h = &watchHandler{Handler: h, on: onLog}
		}
		oc := *o
		oc.withoutGuest = !c.withGuest
		job := testJob(t, s, []byte("#cloud-config\n"))
		job.Observe = ledger.Observe
		return oc.Build(ctx, slog.New(h), job)
	}
	imgs, err := build(t, ctx, spec, faultCell{}, nil, nil)
	if err != nil {
		t.Fatalf("build without faults: %v", err)
	}
	for _, im := range imgs {
		current[im.Cloud] = []string{im.ID}
	}
	assertLeft(t, ctx, prefix, expected(0))

	for _, c := range faultCells() {
		t.Run(c.step+"/"+c.fault, func(t *testing.T) {
			s := spec
			bctx := ctx
			if c.signal != 0 {
				var stop context.CancelFunc
				bctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
				defer stop()
			}
			var handles []*faultproxy.Handle
			for i, r := range c.rules {
				r.Name = fmt.Sprintf("%s %s #%d", c.step, c.fault, i)
				if c.signal != 0 {
					r.OnFire = func() { _ = syscall.Kill(os.Getpid(), c.signal) }
				}
				h, err := proxy.Add(r)
				if err != nil {
					t.Fatal(err)
				}
				handles = append(handles, h)
			}
			// A cell at a step that makes no API call signals when the
			// build logs that the step started.
			var onLog func(string, map[string]string)
			var atStepFired atomic.Bool
			if c.atStep != "" {
				var once sync.Once
				onLog = func(msg string, attrs map[string]string) {
					if msg == "step started" && attrs["step"] == c.atStep {
						once.Do(func() {
							atStepFired.Store(true)
							_ = syscall.Kill(os.Getpid(), c.signal)
						})
					}
				}
			}
			ledger := &Ledger{}
			imgs, err := build(t, bctx, s, c, onLog, ledger)
			// What the build says it leaves is what a second Ctrl-C prints.
			left := ledger.Left()
			if c.leavesServer {
				if len(left) != 1 || !strings.HasPrefix(left[0], "server ") {
					t.Errorf("the ledger says %q is left; want the builder server only", left)
				}
			} else if len(left) > 0 {
				t.Errorf("the ledger says %q is left; want nothing", left)
			}
			fired := 0
			for _, h := range handles {
				fired += h.Fired()
				h.Remove()
			}
			if atStepFired.Load() {
				fired++
			}
			if fired == 0 {
				t.Errorf("the fault never fired: the cell proves nothing (requests: %v)", proxy.Requests())
			}
			proxy.ClearRequests()
			code := 0
			if err != nil {
				code = errs.KindOf(err).ExitCode()
			}
			if code != c.want {
				t.Errorf("exit code %d (%v), want %d", code, err, c.want)
			}
			if err != nil {
				// (The CLI prints it on one line, a joined error's lines apart by "; ".)
				if !strings.Contains(err.Error(), c.msg) {
					t.Errorf("error %q: want it to name %q", err, c.msg)
				}
			}
			want := map[string][]string{}
			for _, name := range publish {
				want[name] = append([]string{foreign[name]}, current[name]...)
			}
			switch {
			case len(imgs) == len(publish) && c.keepsOld:
				for _, im := range imgs {
					current[im.Cloud] = append(current[im.Cloud], im.ID) // both stand
				}
			case len(imgs) == len(publish):
				for _, im := range imgs {
					current[im.Cloud] = []string{im.ID} // the old revisions were pruned
				}
			case code == 0 || code == 10 || (c.keepsOld && code == 130):
				t.Fatalf("published %v, want one image per cloud of %v", imgs, publish)
			case len(imgs) != 0:
				t.Errorf("a failed build returned images %v", imgs)
			}
			if len(imgs) > 0 && code != 0 && code != 10 && code != 130 {
				t.Errorf("exit %d came with images %v: only a published build (0, 10, 130) returns them", code, imgs)
			}
			if len(imgs) > 0 {
				for _, name := range publish {
					want[name] = append([]string{foreign[name]}, current[name]...)
				}
			}
			for _, name := range publish {
				got := imageIDs(t, ctx, direct[name], imageName)
				slices.Sort(got)
				slices.Sort(want[name])
				if !slices.Equal(got, want[name]) {
					t.Errorf("cloud %s: images named %s are %v, want %v (the operator's %s and ours)", name, imageName, got, want[name], foreign[name])
				}
			}
			// Everything of the prefix in every project, counted before any
			// cleanup helper: exactly the images of want, the prefix's one
			// keypair and security group, and no server or port (but the one
			// the cloud refused to delete).
			stack := wantLeft{keypair: true, securityGroup: true, images: []string{baseImage}}
			if c.leavesServer {
				stack.servers = 1
			}
			for _, name := range publish {
				stack.images = append(stack.images, want[name]...)
			}
			assertLeft(t, ctx, prefix, stack)
			if c.leavesServer {
				removeBuilders(t, ctx, direct[testenv.BuildCloud], prefix)
			}
			for _, name := range publish {
				// What the cloud holds is the truth for the next cell.
				got := imageIDs(t, ctx, direct[name], imageName)
				current[name] = slices.DeleteFunc(got, func(id string) bool { return id == foreign[name] })
			}
			if left, _ := filepath.Glob(filepath.Join(tmp, "*")); len(left) > 0 {
				t.Errorf("scratch files left: %v", left)
			}
		})
	}
}

// wantLeft is what a test expects to find of its prefix in the whole stack.
type wantLeft struct {
	servers int      // builder servers, each with exactly one port
	images  []string // the IDs of every image named with the prefix, in any project
	// keypair and securityGroup: the prefix's own one exists (exactly one).
	keypair, securityGroup bool
}

// assertLeft lists, in every project, everything named with prefix (and
// every port of its servers and security groups) and fails t unless it is
// exactly w (see leftProblems). Call it before any helper that deletes
// resources of the prefix.
func assertLeft(t *testing.T, ctx context.Context, prefix string, w wantLeft) {
	t.Helper()
	leaks, err := testenv.FindLeaks(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range leftProblems(leaks, prefix, w) {
		t.Error(p)
	}
}

// leftProblems compares what FindLeaks found of prefix with w: exactly
// w.servers servers and as many ports, no volume, exactly one keypair and
// one security group of the prefix's names (or none), exactly the images
// of w.images, nothing of another kind.
func leftProblems(leaks []testenv.Leak, prefix string, w wantLeft) []string {
	var problems []string
	got := map[string][]string{}
	for _, l := range leaks {
		got[l.Kind] = append(got[l.Kind], l.String())
	}
	count := func(kind string, want int) {
		if len(got[kind]) != want {
			problems = append(problems, fmt.Sprintf("%d %ss of prefix %s, want %d: %v", len(got[kind]), kind, prefix, want, got[kind]))
		}
	}
	count("server", w.servers)
	count("port", w.servers)
	count("volume", 0)
	named := func(kind, name string, want bool) {
		wantN := 0
		if want {
			wantN = 1
		}
		n := 0
		for _, l := range leaks {
			if l.Kind == kind && l.Name == name {
				n++
			}
		}
		if len(got[kind]) != wantN || n != wantN {
			problems = append(problems, fmt.Sprintf("%ss of prefix %s: %v, want exactly %d named %s", kind, prefix, got[kind], wantN, name))
		}
	}
	named("keypair", config.KeypairName(prefix), w.keypair)
	named("security group", config.SecurityGroupName(prefix), w.securityGroup)
	var ids []string
	for _, l := range leaks {
		if l.Kind == "image" {
			ids = append(ids, l.ID)
		}
	}
	want := slices.Clone(w.images)
	slices.Sort(ids)
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		problems = append(problems, fmt.Sprintf("images of prefix %s in the stack: %v, want exactly %v (all: %v)", prefix, ids, want, got["image"]))
	}
	for kind := range got {
		if !slices.Contains([]string{"server", "port", "volume", "keypair", "security group", "image"}, kind) {
			problems = append(problems, fmt.Sprintf("unexpected %s of prefix %s: %v", kind, prefix, got[kind]))
		}
	}
	return problems
}

// removeExpectedLeft deletes what w says a test leaves by design, and
// nothing else: what else is there stays for testenv.Prefix's check.
func removeExpectedLeft(t *testing.T, prefix string, w wantLeft) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	leaks, err := testenv.FindLeaks(ctx, prefix)
	if err != nil {
		t.Errorf("listing what prefix %s left: %v", prefix, err)
		return
	}
	expected := slices.DeleteFunc(leaks, func(l testenv.Leak) bool {
		switch l.Kind {
		case "keypair":
			return !w.keypair || l.Name != config.KeypairName(prefix)
		case "security group":
			return !w.securityGroup || l.Name != config.SecurityGroupName(prefix)
		case "image":
			return !slices.Contains(w.images, l.ID)
		}
		return true
	})
	if err := testenv.DeleteLeaks(ctx, expected); err != nil {
		t.Errorf("removing what prefix %s leaves by design: %v", prefix, err)
	}
}

// uploadFaultImage uploads size random bytes as a raw image named name.
func uploadFaultImage(t *testing.T, ctx context.Context, c *testenv.Cloud, dir, name string, size int) string {
	t.Helper()
	return uploadFaultData(t, ctx, c, dir, name, size, func([]byte) map[string]string { return nil })
}

// uploadFaultBase uploads 1 MiB of random bytes as prefix's base image, with
// the properties init gives it.
func uploadFaultBase(t *testing.T, ctx context.Context, c *testenv.Cloud, dir, prefix string) string {
	t.Helper()
	return uploadFaultData(t, ctx, c, dir, config.BaseImageName(prefix, config.BaseNoble, config.ArchX64), 1<<20,
		func(data []byte) map[string]string { return initProperties(prefix, data) })
}

func uploadFaultData(t *testing.T, ctx context.Context, c *testenv.Cloud, dir, name string, size int, props func([]byte) map[string]string) string {
	t.Helper()
	path := filepath.Join(dir, "upload.raw")
	data := make([]byte, size)
	_, _ = rand.Read(data)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	id, err := testenv.UploadImage(ctx, c.Image, name, path, "raw", props(data))
	if id != "" {
		t.Cleanup(func() { deleteDirect(t, c, id) })
	}
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func deleteDirect(t *testing.T, c *testenv.Cloud, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := images.Delete(ctx, c.Image, id).ExtractErr(); err != nil && !gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		t.Errorf("deleting image %s: %v", id, err)
	}
}

// imageIDs lists the IDs of the project's images named name.
func imageIDs(t *testing.T, ctx context.Context, c *testenv.Cloud, name string) []string {
	t.Helper()
	all, err := testenv.ImagesNamed(ctx, c.Image, name)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, im := range all {
		if im.Name == name {
			ids = append(ids, im.ID)
		}
	}
	return ids
}

// builderServers lists the project's servers whose name starts with prefix.
func builderServers(t *testing.T, ctx context.Context, c *testenv.Cloud, prefix string) []string {
	t.Helper()
	pages, err := servers.List(c.Compute, servers.ListOpts{}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all, err := servers.ExtractServers(pages)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range all {
		if strings.HasPrefix(s.Name, prefix) {
			out = append(out, s.Name+" "+s.ID)
		}
	}
	return out
}

// removeBuilders deletes the servers a cell left on purpose.
func removeBuilders(t *testing.T, ctx context.Context, c *testenv.Cloud, prefix string) {
	t.Helper()
	left := builderServers(t, ctx, c, prefix)
	if len(left) == 0 {
		t.Errorf("the cloud refused to delete the builder, yet no server is left")
	}
	for _, s := range left {
		id := s[strings.LastIndex(s, " ")+1:]
		if err := testenv.DeleteServer(ctx, c.Compute, id); err != nil {
			t.Errorf("deleting server %s: %v", s, err)
		}
	}
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// proxiedConnector starts a faultproxy in front of the test OpenStack's
// Keystone (closed when tb ends) and returns it with a Connector whose
// clouds reach every service through it; opts go to each Connect.
func proxiedConnector(tb testing.TB, opts ...openstack.Option) (*faultproxy.Proxy, Connector) {
	tb.Helper()
	ao, _, _, err := clouds.Parse(clouds.WithCloudName(testenv.BuildCloud), clouds.WithLocations(testenv.CloudsFile()))
	if err != nil {
		tb.Fatal(err)
	}
	proxy, err := faultproxy.New(ao.IdentityEndpoint)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = proxy.Close() })
	return proxy, func(ctx context.Context, cloud string, log *slog.Logger) (Cloud, error) {
		all := append([]openstack.Option{openstack.WithLogger(log), openstack.WithCloudsPaths(testenv.CloudsFile()),
			openstack.WithAuthURL(proxy.AuthURL())}, opts...)
		return openstack.Connect(ctx, cloud, all...)
	}
}

// TestLeftProblems: the fault cells' census fails for a duplicate keypair
// or security group, an image too many or too few, a server or a port left,
// a volume; and passes for exactly what is expected. (It runs without the
// stack: it proves the integration check can fail.)
func TestLeftProblems(t *testing.T) {
	const p = "it-abc123"
	kp := testenv.Leak{Kind: "keypair", Name: config.KeypairName(p), ID: config.KeypairName(p), Project: "u1"}
	sg := testenv.Leak{Kind: "security group", Name: config.SecurityGroupName(p), ID: "sg1", Project: "p1"}
	img := func(id string) testenv.Leak {
		return testenv.Leak{Kind: "image", Name: config.ImageName(p, config.BaseNoble, config.ArchX64), ID: id, Project: "p1"}
	}
	server := testenv.Leak{Kind: "server", Name: config.BuilderName(p, config.BaseNoble, config.ArchX64), ID: "s1", Project: "p1"}
	port := testenv.Leak{Kind: "port", Name: "(unnamed, device s1)", ID: "port1", Project: "p1"}
	want := wantLeft{keypair: true, securityGroup: true, images: []string{"i1", "i2"}}
	base := []testenv.Leak{kp, sg, img("i1"), img("i2")}
	tests := []struct {
		name  string
		leaks []testenv.Leak
		want  wantLeft
		fails bool
	}{
		{"exactly", base, want, false},
		{"the server the cloud kept, with its port", append(slices.Clone(base), server, port), wantLeft{servers: 1, keypair: true, securityGroup: true, images: want.images}, false},
		{"nothing at all", nil, wantLeft{}, false},
		{"duplicate keypair", append(slices.Clone(base), kp), want, true},
		{"a second security group", append(slices.Clone(base), testenv.Leak{Kind: "security group", Name: p + "-other", ID: "sg2"}), want, true},
		{"no security group", []testenv.Leak{kp, img("i1"), img("i2")}, want, true},
		{"an image too many", append(slices.Clone(base), img("i3")), want, true},
		{"an image missing", []testenv.Leak{kp, sg, img("i1")}, want, true},
		{"a server", append(slices.Clone(base), server), want, true},
		{"a port", append(slices.Clone(base), port), want, true},
		{"a volume", append(slices.Clone(base), testenv.Leak{Kind: "volume", Name: p + "-vol", ID: "v1"}), want, true},
		{"another kind", append(slices.Clone(base), testenv.Leak{Kind: "floating ip", Name: p, ID: "f1"}), want, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problems := leftProblems(tt.leaks, p, tt.want)
			if (len(problems) > 0) != tt.fails {
				t.Errorf("problems %q, want failing %v", problems, tt.fails)
			}
		})
	}
}
