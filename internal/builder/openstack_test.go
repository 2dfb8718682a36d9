package builder

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/manifest"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
	"github.com/runner-image-builder/github-runner-image-builder/internal/statedir"
)

func testSpec(t *testing.T, change func(*config.RunSpec)) config.RunSpec {
	t.Helper()
	verify := filepath.Join(t.TempDir(), "verify.sh")
	if err := os.WriteFile(verify, []byte("#!/bin/sh\ntrue\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := config.RunSpec{
		ImageName: "p-noble-x64", Cloud: "build", Arch: config.ArchX64, Base: config.BaseNoble, Prefix: "p",
		KeepRevisions: 2, Visibility: config.VisibilityPrivate, RunnerRepo: config.DefaultRunnerRepo,
		RunnerAPIURL: config.DefaultRunnerAPIURL, Timeouts: config.DefaultTimeouts(), Builder: config.BuilderOpenStack,
		UserDataFile: "/dev/null", VerifyScriptFile: verify, SkipDefaultChecks: true,
	}
	if change != nil {
		change(&s)
	}
	if err := s.Validate(); err != nil {
		t.Fatalf("test spec: %v", err)
	}
	return s
}

func testOpenStack(t *testing.T, clouds ...*fakeCloud) *OpenStack {
	dir := t.TempDir()
	env := map[string]string{"HOME": dir, "XDG_STATE_HOME": filepath.Join(dir, "state"), "TMPDIR": dir}
	return &OpenStack{Connect: fakeClouds(clouds...), Getenv: func(k string) string { return env[k] }, Version: "v-test",
		Now: func() time.Time { return time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC) }}
}

func stepNames(steps []Step) []string {
	var out []string
	for _, s := range steps {
		out = append(out, s.Name)
	}
	return out
}

func TestOpenStackStepsInOrder(t *testing.T) {
	tests := []struct {
		name string
		spec func(*config.RunSpec)
		want []string
	}{
		{"no script", nil, []string{"connect", "lock", "prepare", "keypair", "security group", "flavor and network", "base image",
			"server", "ssh", "cloud-init", "verify", "manifest", "clean", "power-off", "stop", "snapshot", "copy", "keep manifest", "publish", "prune"}},
		{"script", func(s *config.RunSpec) { s.ScriptURL = "http://127.0.0.1:1/s.sh" }, []string{"connect", "lock", "prepare", "keypair",
			"security group", "flavor and network", "base image", "server", "ssh", "cloud-init", "script", "verify", "manifest", "clean",
			"power-off", "stop", "snapshot", "copy", "keep manifest", "publish", "prune"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := testSpec(t, tt.spec)
			job := Job{Spec: spec}
			if spec.ScriptURL != "" {
				job.Script = []byte("#!/bin/sh\n")
			}
			b := (&OpenStack{}).newBuild(slog.New(slog.DiscardHandler), job, nil)
			steps := b.steps()
			if got := stepNames(steps); !slices.Equal(got, tt.want) {
				t.Errorf("steps\n got %q\nwant %q", got, tt.want)
			}
			timeouts := map[string]string{"server": "--boot-timeout", "ssh": "--ssh-timeout", "cloud-init": "--cloud-init-timeout",
				"script": "--script-timeout", "snapshot": "--snapshot-timeout", "copy": "--copy-timeout"}
			for _, s := range steps {
				if flag, ok := timeouts[s.Name]; ok && (s.TimeoutFlag != flag || s.Timeout <= 0) {
					t.Errorf("step %s: timeout %s flag %q, want a timeout set by %s", s.Name, s.Timeout, s.TimeoutFlag, flag)
				}
				if s.Name == "ssh" && s.Timeout != b.spec.Timeouts.SSH {
					t.Errorf("ssh step deadline %s: sshd has the pinned key early in the boot; want --ssh-timeout's %s", s.Timeout, b.spec.Timeouts.SSH)
				}
				if s.Name != "lock" && s.Timeout <= 0 {
					t.Errorf("step %s has no deadline", s.Name)
				}
			}
		})
	}
}

// A run whose base image is missing fails before creating anything, with
// a not-found error that says to run init, and releases its lock.
func TestRunWithoutBaseImage(t *testing.T) {
	build := newFakeCloud("build")
	o := testOpenStack(t, build)
	spec := testSpec(t, nil)
	_, err := o.Build(context.Background(), nil, testJob(t, spec, []byte("#cloud-config\n")))
	if !errs.Is(err, errs.KindNotFound) || !strings.Contains(err.Error(), "run init") {
		t.Fatalf("err = %v, want not-found saying to run init", err)
	}
	if slices.Contains(build.calls, "CreateServer") {
		t.Error("a server was created without a base image")
	}
	// The lock was released: a second run gets as far again.
	if _, err := o.Build(context.Background(), nil, testJob(t, spec, nil)); errs.Is(err, errs.KindLocked) {
		t.Errorf("second run: %v", err)
	}
}

// A server in ERROR fails the run with Nova's fault (exit 6) and is deleted.
func TestRunServerErrorDeletesServer(t *testing.T) {
	build := newFakeCloud("build")
	storeBase(build, "p")
	build.serverFault = "No valid host was found"
	o := testOpenStack(t, build)
	_, err := o.Build(context.Background(), nil, testJob(t, testSpec(t, nil), nil))
	if errs.KindOf(err) != errs.KindBuild || errs.ExitCode(err) != 6 || !strings.Contains(err.Error(), "No valid host was found") {
		t.Fatalf("err = %v (exit %d), want a build failure with the fault", err, errs.ExitCode(err))
	}
	if len(build.servers) != 0 {
		t.Errorf("servers left: %v", build.servers)
	}
	if !slices.Contains(build.calls, "DeleteServer") {
		t.Error("the server was not deleted")
	}
	if _, ok := build.keypairs[config.KeypairName("p")]; !ok {
		t.Error("the keypair was not imported")
	}
}

// A second run of the same builder on this host is refused with exit 9.
func TestRunLockedByAnotherRun(t *testing.T) {
	build := newFakeCloud("build")
	o := testOpenStack(t, build)
	spec := testSpec(t, nil)
	dir, err := config.StateDir(o.getenv(), spec.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := statedir.TryLock(filepath.Join(dir, "build-noble-x64.lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	_, err = o.Build(context.Background(), nil, testJob(t, spec, nil))
	if errs.ExitCode(err) != 9 {
		t.Fatalf("err = %v (exit %d), want locked (9)", err, errs.ExitCode(err))
	}
}

// publishFixture is a build that reached the snapshot: copy, publish and
// prune are run on it directly.
func publishFixture(t *testing.T, upload ...string) (*osBuild, map[string]*fakeCloud) {
	t.Helper()
	clouds := map[string]*fakeCloud{"build": newFakeCloud("build")}
	all := []*fakeCloud{clouds["build"]}
	for _, u := range upload {
		if _, ok := clouds[u]; !ok {
			clouds[u] = newFakeCloud(u)
			all = append(all, clouds[u])
		}
	}
	o := testOpenStack(t, all...)
	spec := testSpec(t, func(s *config.RunSpec) { s.UploadClouds = upload; s.Visibility = config.VisibilityShared })
	b := &osBuild{o: o, spec: spec, log: discard(), info: buildInfo{ID: "b1", Prefix: "p", Arch: spec.Arch, Base: spec.Base,
		RunnerVersion: "2.330.0", Time: o.now(), BuilderVersion: o.Version}, cloud: clouds["build"]}
	snap := clouds["build"].store(spec.ImageName, "qcow2", b.info.imageProperties(false), []byte("the built image"))
	b.snapshot = snap
	attachPublication(b)
	return b, clouds
}

func TestCopyPublishPrune(t *testing.T) {
	b, clouds := publishFixture(t, "east", "build", "west")
	ctx := context.Background()
	// Older revisions in east: two of ours, one unmarked (the Python tool's).
	east := clouds["east"]
	old1 := east.store(b.spec.ImageName, "qcow2", map[string]string{PropPublished: "true"}, []byte("old1"))
	old2 := east.store(b.spec.ImageName, "qcow2", map[string]string{PropPublished: "true"}, []byte("old2"))
	python := east.store(b.spec.ImageName, "qcow2", nil, []byte("python"))

	for _, step := range []func(context.Context) error{b.copy, b.pub.publish, b.pub.prune} {
		if err := step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.pub.cleanupCopies(ctx, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(b.pub.copies.tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file left: %v", err)
	}
	var gotClouds []string
	for _, p := range b.pub.published {
		gotClouds = append(gotClouds, p.Cloud)
		c := clouds[p.Cloud]
		im, err := c.GetImage(ctx, p.ID)
		if err != nil {
			t.Fatalf("%s: %v", p.Cloud, err)
		}
		if string(c.data[p.ID]) != "the built image" || im.Checksum != b.snapshot.Checksum || p.Checksum != im.Checksum {
			t.Errorf("%s: data %q checksum %s", p.Cloud, c.data[p.ID], im.Checksum)
		}
		if im.Visibility != "shared" || im.Properties[PropPublished] != "true" || im.Properties[PropBuildID] != "b1" ||
			im.Properties["os_version"] != "24.04" || im.Properties[PropRunnerVersion] != "2.330.0" {
			t.Errorf("%s: visibility %s properties %v", p.Cloud, im.Visibility, im.Properties)
		}
	}
	if !slices.Equal(gotClouds, []string{"east", "build", "west"}) {
		t.Errorf("published in %v, want --upload-clouds order", gotClouds)
	}
	if p := b.pub.published[1]; p.ID != b.snapshot.ID {
		t.Errorf("the build cloud's image is %s, want the snapshot %s (no copy to itself)", p.ID, b.snapshot.ID)
	}
	// keep 2: the new copy and old2 stay; old1 goes; the unmarked one stays.
	for id, want := range map[string]bool{old1.ID: false, old2.ID: true, python.ID: true, b.pub.published[0].ID: true} {
		if _, err := east.GetImage(ctx, id); (err == nil) != want {
			t.Errorf("east image %s present=%v, want %v", id, err == nil, want)
		}
	}
}

// A copy whose checksum does not match fails the copy step (exit 8), and
// the cleanup removes every copy and the temporary file.
func TestCopyChecksumMismatch(t *testing.T) {
	b, clouds := publishFixture(t, "east", "west")
	clouds["west"].corruptCopy = true
	ctx := context.Background()
	err := b.copy(ctx)
	if errs.ExitCode(err) != 8 || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("err = %v (exit %d), want a publish failure naming the mismatch", err, errs.ExitCode(err))
	}
	cleanupFailedCopy(t, ctx, b, clouds)
	// The snapshot's cleanup removes it after a failure, keeps it otherwise.
	if err := b.deleteSnapshot(ctx, false); err != nil || len(clouds["build"].images) != 1 {
		t.Errorf("snapshot removed after success: %v", err)
	}
	if err := b.deleteSnapshot(ctx, true); err != nil || len(clouds["build"].images) != 0 {
		t.Errorf("snapshot kept after failure: %v", err)
	}
}

func TestImageProperties(t *testing.T) {
	info := buildInfo{ID: "id1", Prefix: "p", Arch: config.ArchARM, Base: config.BaseResolute,
		Time: time.Date(2026, 2, 3, 4, 5, 6, 0, time.FixedZone("x", 3600)), BuilderVersion: "v1"}
	got := info.imageProperties(false)
	want := map[string]string{"architecture": "aarch64", "os_distro": "ubuntu", "os_version": "26.04", "os_type": "linux",
		PropBuildID: "id1", PropPrefix: "p", PropBase: "resolute", PropArch: "arm", PropBuildTime: "2026-02-03T03:05:06Z",
		PropBuilderVersion: "v1"}
	if !equalMaps(got, want) {
		t.Errorf("unpublished properties\n got %v\nwant %v", got, want)
	}
	info.RunnerVersion = "2.330.0"
	got = info.imageProperties(true)
	want[PropRunnerVersion], want[PropPublished] = "2.330.0", "true"
	if !equalMaps(got, want) {
		t.Errorf("published properties\n got %v\nwant %v", got, want)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestEnsureKeypair(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	mine := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	key := statedir.Key{Signer: signer, AuthorizedKey: mine + " me@host"}
	tests := []struct {
		name      string
		have      string
		wantCalls []string
	}{
		{"missing", "", []string{"ImportKeypair"}},
		{"same key, other comment", mine + " other", nil},
		{"other key", "ssh-ed25519 AAAAother someone", []string{"DeleteKeypair", "ImportKeypair"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newFakeCloud("c")
			if tt.have != "" {
				c.keypairs["k"] = tt.have
			}
			if err := ensureKeypair(context.Background(), c, "k", key, discard()); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(c.calls, tt.wantCalls) {
				t.Errorf("calls %v, want %v", c.calls, tt.wantCalls)
			}
			if publicKeyBlob(c.keypairs["k"]) != mine {
				t.Errorf("keypair holds %q", c.keypairs["k"])
			}
		})
	}
}

func TestDigestsMatch(t *testing.T) {
	d := Digests{Size: 3, MD5: "m", SHA512: "s"}
	tests := []struct {
		im   openstack.Image
		want string
	}{
		{openstack.Image{SizeBytes: 3, Checksum: "m", HashAlgo: "sha512", HashValue: "s"}, ""},
		{openstack.Image{SizeBytes: 3, Checksum: "m"}, ""},
		{openstack.Image{SizeBytes: 3, HashAlgo: "sha512", HashValue: "s"}, ""},
		{openstack.Image{SizeBytes: 4, Checksum: "m"}, "size 4"},
		{openstack.Image{SizeBytes: 3, Checksum: "x"}, "checksum x"},
		{openstack.Image{SizeBytes: 3, Checksum: "m", HashAlgo: "sha512", HashValue: "t"}, "os_hash_value"},
		{openstack.Image{SizeBytes: 3}, "no checksum"},
	}
	for _, tt := range tests {
		err := d.matches(&tt.im)
		if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("matches(%+v) = %v, want %q", tt.im, err, tt.want)
		}
	}
}

// attachPublication gives a build made by hand (a test's fixture) the
// publishing state Build gives it, from its cloud and snapshot.
func attachPublication(b *osBuild) {
	b.pub = &publication{connect: b.o.Connect, log: b.log, spec: b.spec, info: b.info, observe: b.job.Observe}
	b.open = b.o.Connect
	if b.snapshot != nil {
		b.pub.home = &publishedCopy{cloud: b.cloud, image: *b.snapshot}
		b.pub.format = *b.snapshot
	}
}

// testJob prepares spec as internal/build does for a build: the verify
// script read, the script fetched, the checks made.
func testJob(t testing.TB, spec config.RunSpec, userData []byte) Job {
	t.Helper()
	var verify []byte
	if spec.VerifyScriptFile != "" {
		var err error
		if verify, err = os.ReadFile(spec.VerifyScriptFile); err != nil {
			t.Fatal(err)
		}
	}
	checks, err := ChecksFor(spec, "", verify)
	if err != nil {
		t.Fatal(err)
	}
	job := Job{Spec: spec, UserData: userData, Checks: checks}
	if spec.ScriptURL != "" {
		if job.Script, err = FetchScript(context.Background(), nil, spec.ScriptURL, nil); err != nil {
			t.Fatal(err)
		}
	}
	return job
}

// A cloud call of a step around the server that fails with an error nobody
// classified (a 5xx that outlived its retries) is a build failure (exit 6),
// not exit 1; one with a kind keeps it. The error names the step and the
// build leaves no server.
func TestCloudStepErrorsHaveAKind(t *testing.T) {
	for _, tt := range []struct {
		call, step string
		err        error
		want       int
	}{
		{"ImportKeypair", "step keypair: ", errors.New("HTTP 500"), 6},
		{"StopServer", "step stop: ", errors.New("HTTP 503"), 6},
		{"StopServer", "step stop: ", errs.New(errs.KindUnreachable, "cloud unreachable"), 3},
	} {
		t.Run(tt.call+"/"+tt.err.Error(), func(t *testing.T) {
			build := newFakeCloud("build")
			storeBase(build, "p")
			build.fail[tt.call] = tt.err
			o := testOpenStack(t, build)
			o.withoutGuest = true // the fake server has no guest
			_, err := o.Build(context.Background(), nil, testJob(t, testSpec(t, nil), nil))
			if errs.ExitCode(err) != tt.want || !strings.Contains(err.Error(), tt.step) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v (exit %d), want exit %d, one line naming %q", err, errs.ExitCode(err), tt.want, tt.step)
			}
			if len(build.servers) != 0 {
				t.Errorf("servers left: %v", build.servers)
			}
		})
	}
}

// The manifest's SHA-256 travels to every image: the build cloud's and
// each copy, created and published with it; the host keeps one
// byte-identical copy per image ID, removed again when the build fails.
func TestManifestTravelsWithTheCopies(t *testing.T) {
	b, clouds := publishFixture(t, "east", "build", "west")
	ctx := context.Background()
	state := t.TempDir()
	b.pub.stateDir = func() (string, error) { return state, nil }
	b.pub.manifest = []byte("{\"schema\": 1}\n")
	want := manifest.SHA256(b.pub.manifest)
	for _, step := range []func(context.Context) error{b.copy, b.pub.keepManifests, b.pub.publish} {
		if err := step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if len(b.pub.published) != 3 {
		t.Fatalf("published %v", b.pub.published)
	}
	for _, p := range b.pub.published {
		c := clouds[p.Cloud]
		created := c.created[p.ID] // the properties the copy was created with
		im, err := c.GetImage(ctx, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		if im.Properties[PropManifestSHA256] != want || p.ManifestSHA256 != want {
			t.Errorf("%s: image %s has %s %q (result %q), want %s", p.Cloud, p.ID, PropManifestSHA256,
				im.Properties[PropManifestSHA256], p.ManifestSHA256, want)
		}
		if p.Cloud != "build" && created[PropManifestSHA256] != want {
			t.Errorf("%s: copy %s created without the manifest's SHA-256: %v", p.Cloud, p.ID, created)
		}
		kept, err := os.ReadFile(config.ManifestFile(config.ManifestsDir(state), p.ID))
		if err != nil || !bytes.Equal(kept, b.pub.manifest) {
			t.Errorf("%s: kept manifest of %s: %q, %v", p.Cloud, p.ID, kept, err)
		}
	}
	if err := b.pub.forgetManifests(ctx, true); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(config.ManifestsDir(state)); len(left) != 0 {
		t.Errorf("a failed build's manifests stay: %v", left)
	}
}
