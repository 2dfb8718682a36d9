package builder_test

// Integration tests of the openstack builder against the test OpenStack
// (.ci/openstack-up.sh) with real qemu guests, driven through the real
// command line (cli.App with the real backend; the SIGTERM test runs the
// built binary). Guest boots: TestOpenStackBuildTwoPrefixes 2,
// TestOpenStackRunCloudInitFails 1, TestOpenStackRunVerifyFails 1,
// TestOpenStackRunSIGTERM 1; the others boot none. Run with
//
//	GRIB_IT=1 go test -p 1 -run TestOpenStack ./internal/builder/ -timeout 40m

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"golang.org/x/crypto/ssh"

	"github.com/runner-image-builder/github-runner-image-builder/internal/build"
	"github.com/runner-image-builder/github-runner-image-builder/internal/builder"
	"github.com/runner-image-builder/github-runner-image-builder/internal/cli"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/manifest"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// itEnv is one test's environment: its own state, cache and temp dirs, the
// test OpenStack's clouds.yaml.
type itEnv struct {
	t    *testing.T
	vars map[string]string
	now  func() time.Time
}

func newITEnv(t *testing.T) *itEnv {
	t.Helper()
	dir := t.TempDir()
	vars := map[string]string{
		"OS_CLIENT_CONFIG_FILE": testenv.CloudsFile(),
		"HOME":                  dir,
		"XDG_STATE_HOME":        filepath.Join(dir, "state"),
		"XDG_CACHE_HOME":        filepath.Join(dir, "cache"),
		"TMPDIR":                filepath.Join(dir, "tmp"),
		"PATH":                  os.Getenv("PATH"),
	}
	if err := os.MkdirAll(vars["TMPDIR"], 0o700); err != nil {
		t.Fatal(err)
	}
	return &itEnv{t: t, vars: vars}
}

func (e *itEnv) getenv(k string) string { return e.vars[k] }

func (e *itEnv) environ(extra ...string) []string {
	var out []string
	for k, v := range e.vars {
		out = append(out, k+"="+v)
	}
	return append(out, extra...)
}

// cli runs the command line in-process with the real backend.
func (e *itEnv) cli(ctx context.Context, environ []string, args ...string) (code int, stdout, stderr string) {
	var out, errb testenv.LockedBuffer
	os := &builder.OpenStack{Getenv: e.getenv, Version: "it-test", Now: e.now}
	app := &cli.App{Stdout: &out, Stderr: &errb, Environ: environ,
		Backend: cli.Backend{Builds: &build.Builds{OpenStack: os}, Init: os.Init, LatestBuildID: os.LatestBuildID, Sweep: os.Sweep}}
	code = app.Main(ctx, args)
	e.t.Logf("$ github-runner-image-builder %s\n-> exit %d\n--- stdout\n%s\n--- stderr (tail)\n%s",
		strings.Join(args, " "), code, out.String(), tailLines(errb.String(), 40))
	return code, out.String(), errb.String()
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// initPrefix runs `init` for noble x64 in the build cloud from a local file,
// and registers the removal of what init creates (base image, keypair,
// security group) before testenv's leak check runs. It may be called from
// any goroutine: a failure is reported with Errorf and returned.
func (e *itEnv) initPrefix(ctx context.Context, prefix, file string, props ...string) bool {
	return e.initPrefixIn(ctx, testenv.BuildCloud, prefix, file, props...)
}

// initPrefixIn is initPrefix in cloud.
func (e *itEnv) initPrefixIn(ctx context.Context, cloud, prefix, file string, props ...string) bool {
	args := []string{"--os-cloud", cloud, "init", "--arch", "x64", "-b", "noble", "--prefix", prefix,
		"--base-image-file", file, "--cache-dir", filepath.Join(e.vars["XDG_CACHE_HOME"], "grib")}
	for _, p := range props {
		args = append(args, "--base-image-property", p)
	}
	e.t.Cleanup(func() { removeInitResources(e.t, prefix) })
	if code, _, stderr := e.cli(ctx, e.environ(), args...); code != 0 {
		e.t.Errorf("init failed with exit %d: %s", code, tailLines(stderr, 5))
		return false
	}
	return true
}

// mustInit is initPrefix for the test goroutine.
func (e *itEnv) mustInit(ctx context.Context, prefix, file string, props ...string) {
	e.t.Helper()
	if !e.initPrefix(ctx, prefix, file, props...) {
		e.t.FailNow()
	}
}

// removeInitResources deletes, in every project, the resources init creates
// for prefix, and images named with prefix that a successful run published;
// anything else stays for testenv's leak check to report.
func removeInitResources(t *testing.T, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	leaks, err := testenv.FindLeaks(ctx, prefix)
	if err != nil {
		t.Errorf("listing init resources: %v", err)
		return
	}
	var expected []testenv.Leak
	for _, l := range leaks {
		if expectedLeftover(l, prefix, true) {
			expected = append(expected, l)
		}
	}
	if err := testenv.DeleteLeaks(ctx, expected); err != nil {
		t.Errorf("removing init resources: %v", err)
	}
}

// expectedLeftover tells what init (and, with published, a successful run's
// images) leaves by design, from what a run must never leave.
func expectedLeftover(l testenv.Leak, prefix string, published bool) bool {
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

// assertOnlyInitLeft fails t when anything but init's resources is named
// with prefix in any project: no builder server, snapshot or copy.
func assertOnlyInitLeft(t *testing.T, ctx context.Context, prefix string) {
	t.Helper()
	leaks, err := testenv.FindLeaks(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leaks {
		if !expectedLeftover(l, prefix, false) {
			t.Errorf("the failed run left %s", l)
		}
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A recipe that needs no network: it only leaves a marker.
const testRecipe = `#cloud-config
runcmd:
  - [sh, -c, 'echo grib-recipe-ran > /var/lib/grib-recipe-marker']
`

func runArgs(prefix string, extra ...string) []string {
	return append([]string{"--log-level", "debug", "--os-cloud", testenv.BuildCloud, "run",
		config.ImageName(prefix, config.BaseNoble, config.ArchX64),
		"--arch", "x64", "-b", "noble", "--prefix", prefix,
		"--boot-timeout", "30m", "--ssh-timeout", "10m", "--cloud-init-timeout", "15m"}, extra...)
}

// inCloud is args with the value of --os-cloud replaced by cloud.
func inCloud(cloud string, args []string) []string {
	out := slices.Clone(args)
	if i := slices.Index(out, "--os-cloud"); i >= 0 && i+1 < len(out) {
		out[i+1] = cloud
	}
	return out
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// watchBuilder records, while a run goes on, the builder server's user-data
// and its last console output (as the admin sees them), until ctx ends.
type watchBuilder struct {
	mu       sync.Mutex
	userData string
	console  string
	seen     bool
}

func (w *watchBuilder) watch(ctx context.Context, t *testing.T, name string) {
	admin, err := testenv.Connect(ctx, testenv.AdminCloud)
	if err != nil {
		t.Errorf("watch: %v", err)
		return
	}
	for ctx.Err() == nil {
		pages, err := servers.List(admin.Compute, servers.ListOpts{AllTenants: true, Name: "^" + regexp.QuoteMeta(name) + "$"}).AllPages(ctx)
		if err == nil {
			all, _ := servers.ExtractServers(pages)
			for _, s := range all {
				if s.Name != name {
					continue
				}
				w.mu.Lock()
				w.seen = true
				if s.Userdata != nil && w.userData == "" {
					if raw, err := base64.StdEncoding.DecodeString(*s.Userdata); err == nil {
						w.userData = string(raw)
					}
				}
				w.mu.Unlock()
				if out, err := servers.ShowConsoleOutput(ctx, admin.Compute, s.ID, servers.ShowConsoleOutputOpts{}).Extract(); err == nil && out != "" {
					w.mu.Lock()
					w.console = out
					w.mu.Unlock()
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(3 * time.Second):
		}
	}
}

// TestOpenStackBuildTwoPrefixes is the main success case: two runs of
// different prefixes at once. Run A runs a script with a secret, copies to
// it-b and it-c and prunes seeded revisions in it-b; its guest presents the
// host key that A generated and put in the user-data, which is not in the
// log nor in the image, which has no host keys at all. Run B builds in
// it-d, whose Nova forbids reading the console: it works, says so, and
// keeps its snapshot there.
func TestOpenStackBuildTwoPrefixes(t *testing.T) {
	imagePath := testenv.RequireImage(t)
	for _, tool := range []string{"qemu-img", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed on the host: %v", tool, err)
		}
	}
	pA, pB := testenv.Prefix(t), testenv.Prefix(t)
	ctx, cancel := context.WithTimeout(t.Context(), 35*time.Minute)
	defer cancel()
	e := newITEnv(t)
	nameA := config.ImageName(pA, config.BaseNoble, config.ArchX64)
	nameB := config.ImageName(pB, config.BaseNoble, config.ArchX64)

	var initWG sync.WaitGroup
	// A's base carries an hw_ property and a property of the operator's,
	// which its copies must carry as the snapshot does. B builds on the
	// project whose console is forbidden.
	initWG.Go(func() {
		e.initPrefix(ctx, pA, imagePath, testenv.GuestProperty+"=true", "hw_qemu_guest_agent=no", "site_owner=grib-ci")
	})
	initWG.Go(func() { e.initPrefixIn(ctx, testenv.NoConsoleCloud, pB, imagePath, testenv.GuestProperty+"=true") })
	initWG.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// Seed revisions of nameA in it-b by upload: three of ours, one not.
	seedDir := t.TempDir()
	seedFile := filepath.Join(seedDir, "seed.raw")
	if err := os.WriteFile(seedFile, bytes.Repeat([]byte{1}, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	cb := testenv.MustConnect(t, ctx, testenv.UploadCloud)
	var seeds []string
	for i := range 3 {
		id, err := testenv.UploadImage(ctx, cb.Image, nameA, seedFile, "raw", map[string]string{
			builder.PropPublished: "true", builder.PropBuildID: fmt.Sprintf("seed%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, id)
	}
	unmarkedID, err := testenv.UploadImage(ctx, cb.Image, nameA, seedFile, "raw", map[string]string{"architecture": "x86_64"})
	if err != nil {
		t.Fatal(err)
	}

	secret := "grib-secret-" + randomHex(t, 16)
	secretSum := sha256.Sum256([]byte(secret))
	script := testenv.ServeScript(t, `#!/bin/sh
set -eu
mkdir -p /var/lib/grib-test
printf '%s' "$GRIB_SECRET" | sha256sum | cut -d' ' -f1 > /var/lib/grib-test/secret.sha256
echo "the script sees the secret $GRIB_SECRET"
sync
`)
	recipe := writeFile(t, "user-data", testRecipe)
	verifyA := writeFile(t, "verify-a.sh", "#!/bin/sh\nset -e\ntest -s /var/lib/grib-test/secret.sha256\ngrep -qx grib-recipe-ran /var/lib/grib-recipe-marker\n")
	verifyB := writeFile(t, "verify-b.sh", "#!/bin/sh\ngrep -qx grib-recipe-ran /var/lib/grib-recipe-marker\n")

	watchCtx, stopWatch := context.WithCancel(ctx)
	var watcher watchBuilder
	var watchWG sync.WaitGroup
	watchWG.Go(func() { watcher.watch(watchCtx, t, config.BuilderName(pA, config.BaseNoble, config.ArchX64)) })

	type result struct {
		code           int
		stdout, stderr string
	}
	var resA, resB result
	var runs sync.WaitGroup
	runs.Go(func() {
		resA.code, resA.stdout, resA.stderr = e.cli(ctx, e.environ(config.SecretEnvPrefix+"GRIB_SECRET="+secret),
			runArgs(pA, "--user-data", recipe, "--skip-default-checks", "--verify-script", verifyA,
				"--script-url", script, "--upload-clouds", testenv.UploadCloud+","+testenv.OtherCloud,
				"--keep-revisions", "2", "--visibility", "shared")...)
	})
	runs.Go(func() {
		resB.code, resB.stdout, resB.stderr = e.cli(ctx, e.environ(), inCloud(testenv.NoConsoleCloud,
			runArgs(pB, "--user-data", recipe, "--skip-default-checks", "--verify-script", verifyB,
				"--flavor", testenv.FlavorMin, "--network", testenv.Network))...)
	})
	runs.Wait()
	stopWatch()
	watchWG.Wait()
	if resA.code != 0 || resB.code != 0 {
		t.Fatalf("runs ended with exit codes %d and %d, want 0 and 0", resA.code, resB.code)
	}

	// Output contract: the IDs in --upload-clouds order; B's build snapshot.
	idsA := parseSuccess(t, resA.stdout, 2)
	idsB := parseSuccess(t, resB.stdout, 1)
	ca := testenv.MustConnect(t, ctx, testenv.BuildCloud)
	cc := testenv.MustConnect(t, ctx, testenv.OtherCloud)
	snapA := onlyImage(t, ctx, ca, nameA)
	copyB := getImage(t, ctx, cb, idsA[0])
	copyC := getImage(t, ctx, cc, idsA[1])
	cd := testenv.MustConnect(t, ctx, testenv.NoConsoleCloud)
	snapB := getImage(t, ctx, cd, idsB[0])
	if snapB.Name != nameB {
		t.Errorf("run B printed %s, named %q, want its snapshot %s", idsB[0], snapB.Name, nameB)
	}
	for _, im := range []*images.Image{snapA, copyB, copyC} {
		if im.Name != nameA || im.Status != images.ImageStatusActive {
			t.Errorf("image %s: name %q status %s", im.ID, im.Name, im.Status)
		}
		if im.Checksum != snapA.Checksum || im.SizeBytes != snapA.SizeBytes || im.Properties["os_hash_value"] != snapA.Properties["os_hash_value"] {
			t.Errorf("image %s: size %d checksum %s differs from the snapshot's %d %s", im.ID, im.SizeBytes, im.Checksum, snapA.SizeBytes, snapA.Checksum)
		}
		if im.Visibility != images.ImageVisibilityShared {
			t.Errorf("image %s: visibility %s, want shared", im.ID, im.Visibility)
		}
		checkProperties(t, im, pA, prop(snapA, builder.PropBuildID))
	}
	checkProperties(t, snapB, pB, prop(snapB, builder.PropBuildID))
	// The copies carry what the snapshot inherited from its base, and none
	// of the build cloud's own properties (which the snapshot has).
	if prop(snapA, "instance_uuid") == "" || prop(snapA, builder.PropBaseSHA256) == "" {
		t.Errorf("snapshot %s has no instance_uuid or %s: Nova's snapshot properties changed", snapA.ID, builder.PropBaseSHA256)
	}
	for _, im := range []*images.Image{copyB, copyC} {
		for _, k := range []string{"hw_qemu_guest_agent", "site_owner", testenv.GuestProperty, builder.PropBaseSHA256, "os_distro"} {
			if prop(im, k) != prop(snapA, k) || prop(im, k) == "" {
				t.Errorf("copy %s: %s = %q, want the snapshot's %q", im.ID, k, prop(im, k), prop(snapA, k))
			}
		}
		for _, k := range []string{"instance_uuid", "base_image_ref", "image_type", "owner_project_name", "user_id", "boot_roles", "image_location"} {
			if v, ok := im.Properties[k]; ok {
				t.Errorf("copy %s carries the build cloud's %s = %v", im.ID, k, v)
			}
		}
		if im.Hidden {
			t.Errorf("copy %s is still hidden after publishing", im.ID)
		}
	}
	if prop(snapA, builder.PropBuildID) == prop(snapB, builder.PropBuildID) {
		t.Error("the two runs share a build ID")
	}

	// Pruning in it-b kept exactly 2 of ours (the copy and the newest seed)
	// and left the unmarked image alone.
	left := listByName(t, ctx, cb, nameA)
	var ours []*images.Image
	foundUnmarked := false
	for i := range left {
		switch {
		case left[i].ID == unmarkedID:
			foundUnmarked = true
		case prop(&left[i], builder.PropPublished) == "true":
			ours = append(ours, &left[i])
		}
	}
	if len(ours) != 2 || !foundUnmarked {
		t.Errorf("it-b has %d of ours (want 2) and the unmarked image: %v", len(ours), foundUnmarked)
	}
	if !slices.ContainsFunc(ours, func(im *images.Image) bool { return im.ID == copyB.ID }) {
		t.Error("pruning removed the copy just published")
	}
	survivors := 0
	for _, id := range seeds {
		if slices.ContainsFunc(ours, func(im *images.Image) bool { return im.ID == id }) {
			survivors++
		}
	}
	if survivors != 1 {
		t.Errorf("%d seeded revisions survived, want 1 (keep 2, the new copy included)", survivors)
	}

	// latest-build-id sees the new copy in it-b.
	if code, out, _ := e.cli(ctx, e.environ(), "--os-cloud", testenv.UploadCloud, "latest-build-id", nameA); code != 0 || out != copyB.ID {
		t.Errorf("latest-build-id in it-b = %q (exit %d), want %s", out, code, copyB.ID)
	}

	// The script ran with its secret, which went nowhere else.
	raw := rawImage(t, ctx, cc, copyC.ID)
	got := strings.TrimSpace(readFromImage(t, ctx, raw, "/var/lib/grib-test/secret.sha256"))
	if got != hex.EncodeToString(secretSum[:]) {
		t.Errorf("secret.sha256 in the image = %q, want the sha256 of the secret", got)
	}
	if strings.TrimSpace(readFromImage(t, ctx, raw, "/var/lib/grib-recipe-marker")) != "grib-recipe-ran" {
		t.Error("the recipe's marker is not in the image")
	}
	// The secret travels base64-encoded on the script session's stdin:
	// look for that form, and for it inside any base64 stream, too.
	forms := testenv.SecretForms(secret)
	for _, form := range forms {
		if n := countInFile(t, raw, []byte(form)); n != 0 {
			t.Errorf("the secret (as %q) is %d times in the raw image (free blocks included)", form, n)
		}
		if strings.Contains(resA.stderr, form) || strings.Contains(resA.stdout, form) {
			t.Errorf("the secret (as %q) is in the run's debug log or stdout", form)
		}
	}
	if !strings.Contains(resA.stderr, "the script sees the secret [REDACTED]") {
		t.Error("the script's output is not in the log, redacted")
	}

	// The image's manifest: in the copy's disk, byte for byte the one the
	// host kept for the snapshot and for each copy, whose SHA-256 all three
	// carry (the copies got it through the copy code). A and B boot the
	// same base image with the same recipe: manifest diff finds no change.
	inImage := readFromImage(t, ctx, raw, manifest.GuestPath)
	sum := manifest.SHA256([]byte(inImage))
	stateA, err := config.StateDir(e.getenv, pA)
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range []*images.Image{snapA, copyB, copyC} {
		kept, err := os.ReadFile(config.ManifestFile(config.ManifestsDir(stateA), im.ID))
		if err != nil || string(kept) != inImage {
			t.Errorf("image %s: the manifest kept on the host (%v) is not the image's:\n%s", im.ID, err, kept)
		}
		if got := prop(im, builder.PropManifestSHA256); got != sum {
			t.Errorf("image %s: %s = %q, want %s", im.ID, builder.PropManifestSHA256, got, sum)
		}
	}
	if m, err := manifest.Parse([]byte(inImage)); err != nil || m.BuildID != prop(snapA, builder.PropBuildID) ||
		len(m.Packages) == 0 || m.BaseImage.SHA256 == "" || m.BaseImage.ID == "" || m.ImageName != nameA {
		t.Errorf("manifest in the image: %+v, %v", m, err)
	}
	if code, out, errOut := e.cli(ctx, e.environ(), "manifest", "diff", idsA[0], idsB[0]); code != 0 || out != "" {
		t.Errorf("manifest diff of two builds of the same recipe: exit %d, stdout %q, want no change\n%s", code, out, errOut)
	}
	watcher.mu.Lock()
	if !watcher.seen || watcher.console == "" || !strings.Contains(watcher.userData, "grib-recipe-ran") {
		t.Errorf("the watcher saw the builder %v, console %d bytes, user-data %q", watcher.seen, len(watcher.console), watcher.userData)
	}
	for _, form := range forms {
		if strings.Contains(watcher.console, form) || strings.Contains(watcher.userData, form) {
			t.Errorf("the secret (as %q) is in the builder's console or user-data", form)
		}
	}
	userData := watcher.userData
	watcher.mu.Unlock()

	// Run A's host key: generated, in the user-data, pinned; the private
	// key in neither the log nor the image; no host key in the image.
	pub, privLines := hostKeyOfUserData(t, userData)
	fp := ssh.FingerprintSHA256(pub)
	if !regexp.MustCompile(`msg="SSH connected" .*host_key=`+regexp.QuoteMeta(fp)).MatchString(resA.stderr) ||
		!strings.Contains(resA.stderr, "SSH host key generated for the guest; the user-data carries it\" build_id=") {
		t.Errorf("run A did not log pinning the key %s of its user-data", fp)
	}
	for _, line := range privLines {
		if strings.Contains(resA.stderr, line) || strings.Contains(resA.stdout, line) || strings.Contains(watcher.console, line) {
			t.Errorf("a line of the private host key is in run A's debug log, stdout or console")
		}
		if n := countInFile(t, raw, []byte(line)); n != 0 {
			t.Errorf("a line of the private host key is %d times in the raw image (free blocks included)", n)
		}
	}
	if got := lsFromImage(t, ctx, raw, "/etc/ssh"); !strings.Contains(got, "sshd_config") || strings.Contains(got, "ssh_host_") {
		t.Errorf("/etc/ssh in the image: want sshd_config and no ssh_host_* files:\n%s", got)
	}

	// Run B, on a cloud that forbids the console: the note, no console tail.
	if !strings.Contains(resB.stderr, "no console tail: the cloud forbids reading the builder's console") ||
		strings.Contains(resB.stderr, "console after cloud-init") || strings.Contains(resB.stderr, "last lines of the console") {
		t.Errorf("run B's log lacks the console note or has console output")
	}

	for _, p := range []string{pA, pB} {
		leaks, err := testenv.FindLeaks(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range leaks {
			if !expectedLeftover(l, p, true) {
				t.Errorf("the run left %s", l)
			}
		}
	}
}

func prop(im *images.Image, k string) string {
	v, _ := im.Properties[k].(string)
	return v
}

func parseSuccess(t *testing.T, stdout string, n int) []string {
	t.Helper()
	rest, ok := strings.CutPrefix(stdout, cli.SuccessHeader)
	ids := strings.Split(rest, ",")
	if !ok || len(ids) != n || strings.ContainsAny(rest, " \n") {
		t.Fatalf("stdout %q is not %q and %d comma-separated IDs without a newline", stdout, cli.SuccessHeader, n)
	}
	return ids
}

func checkProperties(t *testing.T, im *images.Image, prefix, buildID string) {
	t.Helper()
	want := map[string]string{
		"architecture": "x86_64", "os_distro": "ubuntu", "os_version": "24.04", "os_type": "linux",
		builder.PropPublished: "true", builder.PropPrefix: prefix, builder.PropBase: "noble",
		builder.PropArch: "x64", builder.PropBuilderVersion: "it-test", builder.PropBuildID: buildID,
	}
	for k, v := range want {
		if got, _ := im.Properties[k].(string); got != v || v == "" {
			t.Errorf("image %s: property %s = %q, want %q", im.ID, k, got, v)
		}
	}
	if ts, _ := im.Properties[builder.PropBuildTime].(string); ts == "" {
		t.Errorf("image %s has no %s", im.ID, builder.PropBuildTime)
	} else if _, err := time.Parse(time.RFC3339, ts); err != nil {
		t.Errorf("image %s: %s = %q: %v", im.ID, builder.PropBuildTime, ts, err)
	}
}

func getImage(t *testing.T, ctx context.Context, c *testenv.Cloud, id string) *images.Image {
	t.Helper()
	im, err := images.Get(ctx, c.Image, id).Extract()
	if err != nil {
		t.Fatalf("image %s in %s: %v", id, c.Name, err)
	}
	return im
}

func listByName(t *testing.T, ctx context.Context, c *testenv.Cloud, name string) []images.Image {
	t.Helper()
	all, err := testenv.ImagesNamed(ctx, c.Image, name)
	if err != nil {
		t.Fatal(err)
	}
	return all
}

func onlyImage(t *testing.T, ctx context.Context, c *testenv.Cloud, name string) *images.Image {
	t.Helper()
	all := listByName(t, ctx, c, name)
	if len(all) != 1 {
		t.Fatalf("%d images named %s in %s, want 1", len(all), name, c.Name)
	}
	return &all[0]
}

// rawImage downloads an image and converts it to a raw disk file.
func rawImage(t *testing.T, ctx context.Context, c *testenv.Cloud, id string) string {
	t.Helper()
	dir := t.TempDir()
	src, raw := filepath.Join(dir, "image"), filepath.Join(dir, "image.raw")
	body, err := imagedata.Download(ctx, c.Image, id).Extract()
	if err != nil {
		t.Fatalf("download %s: %v", id, err)
	}
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(f, body)
	body.Close()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("download %s: %v", id, err)
	}
	if out, err := exec.CommandContext(ctx, "qemu-img", "convert", "-O", "raw", src, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}
	return raw
}

// readFromImage reads a file from the ext4 first partition of a raw disk with debugfs.
func readFromImage(t *testing.T, ctx context.Context, raw, path string) string {
	t.Helper()
	return debugfsRequest(t, ctx, raw, "cat "+path)
}

// debugfsRequest runs one read-only debugfs request on the ext4 first
// partition of a raw disk.
func debugfsRequest(t *testing.T, ctx context.Context, raw, request string) string {
	t.Helper()
	f, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	mbr := make([]byte, 512)
	_, err = io.ReadFull(f, mbr)
	f.Close()
	if err != nil || mbr[510] != 0x55 || mbr[511] != 0xAA {
		t.Fatalf("no MBR in %s: %v", raw, err)
	}
	offset := int64(binary.LittleEndian.Uint32(mbr[446+8:446+12])) * 512
	out, err := exec.CommandContext(ctx, "debugfs", "-R", request, fmt.Sprintf("%s?offset=%d", raw, offset)).Output()
	if err != nil {
		t.Fatalf("debugfs %s: %v", request, err)
	}
	return string(out)
}

// hostKeyOfUserData finds the host key in a builder's user-data (the
// cloud-config part WithHostKey made): the public key, and the lines of the
// private key file that hold the private key (from the fourth on: the
// first ones are the public key and the check words).
func hostKeyOfUserData(t *testing.T, userData string) (ssh.PublicKey, []string) {
	t.Helper()
	m := regexp.MustCompile(`(?m)^  ed25519_public: "(ssh-ed25519 [^"]+)"$`).FindStringSubmatch(userData)
	if m == nil {
		t.Fatalf("no host key in the user-data:\n%s", userData)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	in := false
	for line := range strings.Lines(userData) {
		line = strings.TrimSpace(line)
		switch {
		case line == "-----BEGIN OPENSSH PRIVATE KEY-----":
			in = true
		case line == "-----END OPENSSH PRIVATE KEY-----":
			in = false
		case in:
			lines = append(lines, line)
		}
	}
	if len(lines) < 5 {
		t.Fatalf("the private host key in the user-data has %d lines", len(lines))
	}
	return pub, lines[3:]
}

// lsFromImage lists a directory of the ext4 first partition of a raw disk.
func lsFromImage(t *testing.T, ctx context.Context, raw, path string) string {
	t.Helper()
	return debugfsRequest(t, ctx, raw, "ls -l "+path)
}

// countInFile counts occurrences of needle in a (large, sparse) file.
func countInFile(t *testing.T, path string, needle []byte) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4<<20+len(needle))
	carry := 0
	count := 0
	for {
		n, err := f.Read(buf[carry:])
		chunk := buf[:carry+n]
		count += bytes.Count(chunk, needle)
		if err == io.EOF {
			return count
		}
		if err != nil {
			t.Fatal(err)
		}
		// Keep the last len(needle)-1 bytes: a match may straddle chunks.
		keep := min(len(needle)-1, len(chunk))
		copy(buf, chunk[len(chunk)-keep:])
		carry = keep
	}
}

// TestOpenStackRunCloudInitFails: a recipe that fails ends the run with
// exit 6, the tail of cloud-init's output log in the error, and nothing left.
func TestOpenStackRunCloudInitFails(t *testing.T) {
	imagePath := testenv.RequireImage(t)
	t.Parallel()
	p := testenv.Prefix(t)
	ctx, cancel := context.WithTimeout(t.Context(), 35*time.Minute)
	defer cancel()
	e := newITEnv(t)
	e.mustInit(ctx, p, imagePath, testenv.GuestProperty+"=true")
	recipe := writeFile(t, "user-data", "#cloud-config\nruncmd:\n  - [sh, -c, 'echo grib-recipe-breaks-here; exit 3']\n")
	verify := writeFile(t, "verify.sh", "#!/bin/sh\ntrue\n")
	code, stdout, stderr := e.cli(ctx, e.environ(), runArgs(p, "--user-data", recipe, "--skip-default-checks", "--verify-script", verify)...)
	if code != 6 || stdout != "" {
		t.Errorf("exit %d, stdout %q; want 6 and nothing", code, stdout)
	}
	lastLine := tailLines(stderr, 1)
	if !strings.HasPrefix(lastLine, "Error: ") || !strings.Contains(lastLine, "cloud-init failed") || !strings.Contains(lastLine, "grib-recipe-breaks-here") {
		t.Errorf("error line %q: want cloud-init's failure with the tail of its output log", lastLine)
	}
	assertOnlyInitLeft(t, ctx, p)
}

// TestOpenStackRunVerifyFailsKeepOnFailure: a failed verification ends
// with exit 7 and publishes nothing. Its SSH goes through a jump host
// (--ssh-jump). With --keep-on-failure it leaves
// exactly the builder server running and prints how to reach it (the test
// runs that ssh command: it checks the host key the build pinned) and the
// sweep command that removes it (the test runs that too: nothing is left).
func TestOpenStackRunVerifyFailsKeepOnFailure(t *testing.T) {
	imagePath := testenv.RequireImage(t)
	t.Parallel()
	p := testenv.Prefix(t)
	ctx, cancel := context.WithTimeout(t.Context(), 35*time.Minute)
	defer cancel()
	e := newITEnv(t)
	e.mustInit(ctx, p, imagePath, testenv.GuestProperty+"=true")
	recipe := writeFile(t, "user-data", testRecipe)
	verify := writeFile(t, "verify.sh", "#!/bin/sh\necho grib-verify-says-no\nexit 1\n")
	// The builder's SSH goes through a real OpenSSH jump host (--ssh-jump):
	// the banner wait, the host key check against the console and every
	// guest step up to verify run through it, and so does the printed ssh
	// command.
	jump := testenv.StartJumpHost(t)
	code, stdout, stderr := e.cli(ctx, e.environ(), runArgs(p, "--user-data", recipe, "--skip-default-checks", "--verify-script", verify, "--keep-on-failure",
		"--ssh-jump", jump.Jump(), "--ssh-jump-key", jump.KeyFile, "--ssh-jump-known-hosts", jump.KnownHostsFile)...)
	if code != 7 || stdout != "" {
		t.Errorf("exit %d, stdout %q; want 7 and nothing", code, stdout)
	}
	lastLine := tailLines(stderr, 1)
	if !strings.Contains(lastLine, "verification failed") || !strings.Contains(lastLine, "grib-verify-says-no") {
		t.Errorf("error line %q: want the verification failure with the script's output", lastLine)
	}
	m := regexp.MustCompile(`msg="SSH connected"[^\n]* addr=(\S+)`).FindStringSubmatch(stderr)
	if m == nil || !strings.Contains(stderr, "SSH to the guest goes through a jump host") {
		t.Errorf("the log does not show the SSH connection through the jump host")
	} else if !testenv.ForwardedTo(jump.Log(), m[1]) {
		t.Errorf("the jump host's log shows no channel forwarded to the builder's sshd %s:\n%s", m[1], tailLines(jump.Log(), 40))
	}
	sshCmd, sweepCmd := keptCommands(t, stderr)
	words := strings.Fields(sweepCmd)
	if len(words) < 2 || words[0] != "github-runner-image-builder" {
		t.Fatalf("sweep command %q", sweepCmd)
	}

	// Exactly the builder is left (besides what init made).
	leaks, err := testenv.FindLeaks(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	var servers []string
	serverID := ""
	for _, l := range leaks {
		if l.Kind == "server" && l.Name == config.BuilderName(p, config.BaseNoble, config.ArchX64) {
			servers, serverID = append(servers, l.String()), l.ID
		}
	}
	for _, l := range leaks {
		switch {
		case l.Kind == "server" && l.ID == serverID:
		case l.Kind == "port" && serverID != "" && strings.Contains(l.Name, "device "+serverID): // the server's own port
		case !expectedLeftover(l, p, false):
			t.Errorf("the kept build also left %s", l)
		}
	}
	if len(servers) != 1 {
		t.Errorf("left servers %q; want exactly the builder", servers)
	}

	// The printed ssh command reaches it, checking the pinned host key.
	cmd := exec.CommandContext(ctx, "sh", "-c", sshCmd+" -o BatchMode=yes -o ConnectTimeout=30 'sudo -n cat /var/lib/grib-recipe-marker'")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + e.vars["HOME"]}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "grib-recipe-ran") {
		t.Errorf("%s: %v\n%s", sshCmd, err, out)
	}

	// The printed sweep command removes it, and its known_hosts file.
	if code, _, _ := e.cli(ctx, e.environ(), words[1:]...); code != 0 {
		t.Errorf("%s: exit %d", sweepCmd, code)
	}
	waitNoLeaks(t, ctx, p)
	kh, _ := filepath.Glob(filepath.Join(e.vars["XDG_STATE_HOME"], "github-runner-image-builder", "*", "kept-*.known_hosts"))
	if len(kh) != 0 {
		t.Errorf("the sweep left %q", kh)
	}
}

// keptCommands reads the ssh and sweep commands that run --keep-on-failure
// printed on stderr.
func keptCommands(t *testing.T, stderr string) (ssh, sweep string) {
	t.Helper()
	for _, line := range strings.Split(stderr, "\n") {
		if v, ok := strings.CutPrefix(line, "  Reach it:  "); ok {
			ssh = v
		}
		if v, ok := strings.CutPrefix(line, "  Remove it: "); ok {
			sweep = v
		}
	}
	if !strings.Contains(stderr, "left running for debugging (--keep-on-failure)") || ssh == "" || sweep == "" {
		t.Errorf("no kept-builder instructions on stderr:\n%s", tailLines(stderr, 20))
	}
	if ssh == "" {
		ssh = "false"
	}
	return ssh, sweep
}

// waitNoLeaks waits (a deleted server takes a moment to go) until only
// what init made is left of prefix.
func waitNoLeaks(t *testing.T, ctx context.Context, prefix string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		leaks, err := testenv.FindLeaks(ctx, prefix)
		if err != nil {
			t.Fatal(err)
		}
		var bad []string
		for _, l := range leaks {
			if !expectedLeftover(l, prefix, false) {
				bad = append(bad, l.String())
			}
		}
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("left after the sweep: %q", bad)
			return
		}
		time.Sleep(2 * time.Second)
	}
}

// TestOpenStackRunServerError: a server that goes ERROR fails at once with
// Nova's fault (exit 6) and is deleted. No guest boots.
func TestOpenStackRunServerError(t *testing.T) {
	testenv.Require(t)
	t.Parallel()
	p := testenv.Prefix(t)
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()
	e := newITEnv(t)
	base := writeFile(t, "base.raw", strings.Repeat("\x00", 1<<20))
	e.mustInit(ctx, p, base, testenv.FailSpawnProperty+"=true")
	recipe := writeFile(t, "user-data", testRecipe)
	verify := writeFile(t, "verify.sh", "#!/bin/sh\ntrue\n")
	code, stdout, stderr := e.cli(ctx, e.environ(), runArgs(p, "--user-data", recipe, "--skip-default-checks", "--verify-script", verify)...)
	if code != 6 || stdout != "" {
		t.Errorf("exit %d, stdout %q; want 6 and nothing", code, stdout)
	}
	if lastLine := tailLines(stderr, 1); !strings.Contains(lastLine, "ERROR") || !strings.Contains(lastLine, testenv.FailSpawnProperty) {
		t.Errorf("error line %q: want the server's ERROR with Nova's fault", lastLine)
	}
	assertOnlyInitLeft(t, ctx, p)
}

// TestOpenStackRunSIGTERM sends SIGTERM to the real binary while it waits
// for cloud-init: exit 130, and the builder is gone.
func TestOpenStackRunSIGTERM(t *testing.T) {
	imagePath := testenv.RequireImage(t)
	t.Parallel()
	p := testenv.Prefix(t)
	ctx, cancel := context.WithTimeout(t.Context(), 35*time.Minute)
	defer cancel()
	e := newITEnv(t)
	bin := filepath.Join(t.TempDir(), "github-runner-image-builder")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if out, err := exec.CommandContext(ctx, gobin, "build", "-o", bin, "../../cmd/github-runner-image-builder").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	e.mustInit(ctx, p, imagePath, testenv.GuestProperty+"=true")
	recipe := writeFile(t, "user-data", "#cloud-config\nruncmd:\n  - [sleep, '1200']\n")
	verify := writeFile(t, "verify.sh", "#!/bin/sh\ntrue\n")

	// cloud-init prints the host keys only after runcmd, so with the console
	// policy this run would still be in the "ssh" step during the sleep; to
	// reach the cloud-init wait itself the host key is not checked here.
	cmd := exec.CommandContext(ctx, bin, runArgs(p, "--user-data", recipe, "--skip-default-checks", "--verify-script", verify,
		"--insecure-skip-host-key-check")...)
	cmd.Env = e.environ()
	stderr := &testenv.LockedBuffer{}
	pr, pw := io.Pipe()
	cmd.Stderr = io.MultiWriter(stderr, pw)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() { err := cmd.Wait(); pw.Close(); waitErr <- err }()
	// Wait for the cloud-init step to start, then send SIGTERM.
	found := make(chan bool, 1)
	go func() {
		buf := make([]byte, 64<<10)
		var seen []byte
		sent := false
		for {
			n, err := pr.Read(buf)
			seen = append(seen, buf[:n]...)
			if !sent && cloudInitStarted.Match(seen) {
				sent = true
				found <- cmd.Process.Signal(syscall.SIGTERM) == nil
			}
			if err != nil {
				if !sent {
					found <- false
				}
				return
			}
		}
	}()
	if !<-found {
		<-waitErr
		t.Fatalf("the run ended (or could not be signalled) before waiting for cloud-init:\n%s", tailLines(stderr.String(), 30))
	}
	err := <-waitErr
	var exitErr *exec.ExitError
	code := 0
	if err != nil {
		if !errors.As(err, &exitErr) {
			t.Fatal(err)
		}
		code = exitErr.ExitCode()
	}
	t.Logf("stderr tail:\n%s", tailLines(stderr.String(), 30))
	if code != 130 || stdout.Len() != 0 {
		t.Errorf("exit %d, stdout %q; want 130 and nothing", code, stdout.String())
	}
	if last := tailLines(stderr.String(), 1); !strings.HasPrefix(last, "Error: ") || !strings.Contains(last, "interrupted") {
		t.Errorf("error line %q: want an interruption", last)
	}
	assertOnlyInitLeft(t, ctx, p)
}

// TestOpenStackSweep leaves what crashed runs leave (a builder server, a
// temporary snapshot, keypair, security group), beside what must stay (a
// published image, the base image), and sweeps with a clock 2 h ahead. No
// guest boots (the server's image is not a guest image).
func TestOpenStackSweep(t *testing.T) {
	testenv.Require(t)
	t.Parallel()
	p := testenv.Prefix(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	e := newITEnv(t)
	t.Cleanup(func() { removeInitResources(t, p) })

	c, err := openstack.Connect(ctx, testenv.BuildCloud, openstack.WithCloudsPaths(testenv.CloudsFile()))
	if err != nil {
		t.Fatal(err)
	}
	tc := testenv.MustConnect(t, ctx, testenv.BuildCloud)
	file := writeFile(t, "tiny.raw", strings.Repeat("\x00", 1<<20))
	baseName := config.BaseImageName(p, config.BaseNoble, config.ArchX64)
	imgName := config.ImageName(p, config.BaseNoble, config.ArchX64)
	baseID, err := testenv.UploadImage(ctx, tc.Image, baseName, file, "raw", nil)
	if err != nil {
		t.Fatal(err)
	}
	tempID, err := testenv.UploadImage(ctx, tc.Image, imgName, file, "raw", map[string]string{
		builder.PropPrefix: p, builder.PropBuildID: "crashed"})
	if err != nil {
		t.Fatal(err)
	}
	// A crashed build's copy is hidden (copies are until published): sweep
	// must find it all the same.
	if _, err := images.Update(ctx, tc.Image, tempID, images.UpdateOpts{images.ReplaceImageHidden{NewHidden: true}}).Extract(); err != nil {
		t.Fatal(err)
	}
	pubID, err := testenv.UploadImage(ctx, tc.Image, imgName, file, "raw", map[string]string{
		builder.PropPrefix: p, builder.PropBuildID: "good", builder.PropPublished: "true"})
	if err != nil {
		t.Fatal(err)
	}
	otherID, err := testenv.UploadImage(ctx, tc.Image, p+"-other-prefix-temp", file, "raw", map[string]string{
		builder.PropPrefix: p + "x", builder.PropBuildID: "crashed"})
	if err != nil {
		t.Fatal(err)
	}
	sg, err := c.EnsureSecurityGroup(ctx, config.SecurityGroupName(p), "test")
	if err != nil {
		t.Fatal(err)
	}
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ImportKeypair(ctx, config.KeypairName(p), string(ssh.MarshalAuthorizedKey(sshPub))); err != nil {
		t.Fatal(err)
	}
	flavor, err := c.SelectFlavor(ctx, testenv.FlavorMin)
	if err != nil {
		t.Fatal(err)
	}
	network, err := c.SelectNetwork(ctx, testenv.Network)
	if err != nil {
		t.Fatal(err)
	}
	builderName := config.BuilderName(p, config.BaseJammy, config.ArchARM64)
	srv, err := c.CreateServer(ctx, openstack.ServerSpec{Name: builderName, ImageID: baseID, FlavorID: flavor.ID, NetworkID: network.ID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitServer(ctx, srv.ID, openstack.StatusActive); err != nil {
		t.Fatal(err)
	}

	want := []string{
		"server " + builderName + " " + srv.ID,
		"image " + imgName + " " + tempID,
		"keypair " + config.KeypairName(p) + " " + config.KeypairName(p),
		"security-group " + config.SecurityGroupName(p) + " " + sg.ID,
	}
	sweep := func(now time.Time, dry bool) (int, []string) {
		e.now = func() time.Time { return now }
		args := []string{"--os-cloud", testenv.BuildCloud, "sweep", "--prefix", p, "--older-than", "1h"}
		if dry {
			args = append(args, "--dry-run")
		}
		code, out, _ := e.cli(ctx, e.environ(), args...)
		return code, strings.Split(strings.TrimSpace(out), "\n")
	}
	if code, lines := sweep(time.Now(), false); code != 0 || len(lines) != 1 || lines[0] != "" {
		t.Errorf("sweep of young resources: exit %d, %q; want nothing removed", code, lines)
	}
	later := time.Now().Add(2 * time.Hour)
	code, lines := sweep(later, true)
	if code != 0 || !slices.Equal(lines, prefixAll("would remove ", want)) {
		t.Errorf("dry run: exit %d\n got %q\nwant %q", code, lines, prefixAll("would remove ", want))
	}
	code, lines = sweep(later, false)
	if code != 0 || !slices.Equal(lines, prefixAll("removed ", want)) {
		t.Errorf("sweep: exit %d\n got %q\nwant %q", code, lines, prefixAll("removed ", want))
	}
	for _, id := range []string{baseID, pubID, otherID} {
		if _, err := c.GetImage(ctx, id); err != nil {
			t.Errorf("sweep removed image %s, which it must keep: %v", id, err)
		}
	}
	for _, id := range []string{pubID, otherID} {
		_ = c.DeleteImage(ctx, id)
	}
	if _, err := c.GetServer(ctx, srv.ID); err == nil {
		t.Error("the builder server is still there")
	}
}

// cloudInitStarted matches the log line of the cloud-init step starting.
var cloudInitStarted = regexp.MustCompile(`msg="step started"[^\n]* step=cloud-init`)

func prefixAll(p string, lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = p + l
	}
	return out
}
