package builder_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	. "github.com/runner-image-builder/github-runner-image-builder/internal/builder"
	"github.com/runner-image-builder/github-runner-image-builder/internal/cli"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/manifest"
	"github.com/runner-image-builder/github-runner-image-builder/internal/provision"
	"github.com/runner-image-builder/github-runner-image-builder/internal/qemu"
	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// TestLocalEndToEnd is the local builder's one real build (one guest boot):
// the test image, a small recipe and a script with a secret, served from a
// loopback HTTP server, make a qcow2 that holds the script's marker (read
// with debugfs, no boot) and neither the secret nor cloud-init's instance
// state, nor the host key the build generated and pinned (nor any other host
// key: the image's first boot makes its own); the same build publishes it
// to the test OpenStack's it-b, where it is an active image with the
// builder's properties and the file's checksum.
//
// The guest is not isolated: it has passt's network, through which SSH
// works while the host's loopback stays out of reach. The script tries a
// listener on this host's 127.0.0.1 through slirp's host alias 10.0.2.2
// and through the guest's default gateway (the address passt would map to
// the host without --no-map-gw); nothing may arrive. To keep the guest off
// every other address, passt is run with its outbound sockets bound to
// 127.0.0.1 (IPv4 only): the kernel refuses to send from there to anything
// but loopback.
func TestLocalEndToEnd(t *testing.T) {
	testImage := testenv.RequireImage(t)
	requireQemu(t)
	for _, tool := range []string{"debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (e2fsprogs)", tool)
		}
	}
	prefix := testenv.Prefix(t)
	ctx, cancel := context.WithTimeout(context.Background(), 35*time.Minute)
	defer cancel()

	hostOnly := loopbackListener(t)
	onlyLoopbackPasst(t)

	secret := "grib-e2e-" + randomHex(t, 16)
	marker := "script-marker-" + randomHex(t, 8)
	script := fmt.Sprintf(`#!/bin/sh
set -eu
test -n "${E2E_TOKEN:-}" || { echo "the secret did not arrive" >&2; exit 1; }
echo "echoing the secret: $E2E_TOKEN"
mkdir -p /var/lib/grib-e2e
echo '%s' > /var/lib/grib-e2e/script-marker
for a in 10.0.2.2 $(ip -4 route show default | awk '{print $3}'); do
	if timeout 10 bash -c "exec 3<>/dev/tcp/$a/%d" 2>/dev/null; then echo "probe: reached $a"; else echo "probe: refused $a"; fi
done
`, marker, hostOnly.port)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/build.sh" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, script)
	}))
	defer srv.Close()

	dir := t.TempDir()
	recipe := writeFileIn(t, dir, "user-data", `#cloud-config
write_files:
  - path: /var/lib/grib-e2e/recipe-marker
    content: "written by the test recipe\n"
`)
	verify := writeFileIn(t, dir, "verify.sh", fmt.Sprintf(`#!/bin/sh
set -eu
grep -qx '%s' /var/lib/grib-e2e/script-marker
test -f /var/lib/grib-e2e/recipe-marker
`, marker))
	outDir := filepath.Join(dir, "out")
	if err := os.Mkdir(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(outDir, "image.qcow2")
	imageName := prefix + "-local-e2e"

	env := newLocalEnv(t, "OS_CLIENT_CONFIG_FILE="+testenv.CloudsFile(), "IMAGE_BUILDER_SECRET_E2E_TOKEN="+secret)
	rec := &vmRecorder{}
	var scriptOut testenv.LockedBuffer
	var hostKeys []provision.BuildHostKey
	l := &Local{
		OpenStack: RecordHostKeys(&OpenStack{Getenv: env.getenv, Version: "e2e-test"}, &hostKeys),
		Accel:     &qemu.AccelProbe{}, // the real probe
		Output:    &scriptOut,
		MemoryMiB: 1024, DiskSize: 3 << 30,
		OnVM: func(vm *qemu.VM) {
			rec.add(vm)
			recordLocalBoot(t, imageName, vm, testImage)
		},
	}
	t.Cleanup(func() { deleteImages(t, testenv.UploadCloud, imageName) }) // runs before Prefix's leak check

	code, stdout, stderr := runLocalCLI(ctx, l, env, "--os-cloud", testenv.BuildCloud, "run", imageName,
		"--builder", "local", "--arch", "x64", "--prefix", prefix,
		"--base-image-file", testImage, "--user-data", recipe,
		"--skip-default-checks", "--verify-script", verify,
		"--script-url", srv.URL+"/build.sh", "--output", out, "--upload-clouds", testenv.UploadCloud,
		"--runner-version", e2eRunnerVersion, "--runner-sha256", e2eRunnerSHA256,
		"--ssh-timeout", "20m", "--cloud-init-timeout", "20m", "--script-timeout", "10m")
	if code != 0 {
		t.Fatalf("exit code %d\nstderr:\n%s\nconsole of the guest: see the error above", code, stderr)
	}
	assertNoQemu(t, rec.all())
	assertOnly(t, outDir, "image.qcow2", "image.qcow2.manifest.json")
	id, ok := strings.CutPrefix(stdout, cli.LocalFileHeader+out+"\n"+cli.SuccessHeader)
	if !ok || id == "" || strings.Contains(id, ",") {
		t.Fatalf("stdout %q: want the image file, the success header and one image ID", stdout)
	}

	// The host's loopback: out of the guest's reach (SSH through the
	// forward worked: the script ran).
	probes := scriptOut.String()
	if n := hostOnly.accepted(); n != 0 || strings.Contains(probes, "probe: reached") {
		t.Errorf("the guest reached a listener on the host's 127.0.0.1 (%d connections):\n%s", n, probes)
	}
	if !strings.Contains(probes, "probe: refused 10.0.2.2") || strings.Count(probes, "probe: refused") < 2 {
		t.Errorf("the guest did not try 10.0.2.2 and its default gateway:\n%s", probes)
	}

	// Secrets: the script saw it (it ran), nobody else did.
	// It travels base64-encoded on stdin: look for that form too.
	forms := testenv.SecretForms(secret)
	if got := scriptOut.String(); !strings.Contains(got, "echoing the secret: "+provision.Mask) {
		t.Errorf("script output not redacted: %q", got)
	}
	for _, form := range forms {
		if strings.Contains(scriptOut.String(), form) || strings.Contains(stderr, form) || strings.Contains(stdout, form) {
			t.Errorf("the secret (as %q) reached the script output, the logs or stdout", form)
		}
	}

	// The host key: the build's own, pinned; its private key in no log.
	if len(hostKeys) != 1 {
		t.Fatalf("%d host keys generated, want 1", len(hostKeys))
	}
	hostKey := hostKeys[0]
	if !regexp.MustCompile(`msg="SSH connected" .*host_key=` + regexp.QuoteMeta(hostKey.Fingerprint())).MatchString(stderr) {
		t.Errorf("the log does not show the SSH connection pinning the generated key %s", hostKey.Fingerprint())
	}
	privLines := PrivateKeyLines(t, hostKey)
	for _, line := range privLines {
		if strings.Contains(stderr, line) || strings.Contains(stdout, line) || strings.Contains(scriptOut.String(), line) {
			t.Error("a line of the private host key is in the log, stdout or the script's output")
		}
	}

	// The image file, checked without booting it.
	raw := filepath.Join(dir, "image.raw")
	runTool(t, "qemu-img", "convert", "-O", "raw", out, raw)
	info := runTool(t, "qemu-img", "info", out)
	if !strings.Contains(info, "file format: qcow2") || strings.Contains(info, "backing file") {
		t.Errorf("the output is not a standalone qcow2:\n%s", info)
	}
	fs := fmt.Sprintf("%s?offset=%d", raw, firstPartitionOffset(t, raw))
	if got := debugfs(t, fs, "cat /var/lib/grib-e2e/script-marker"); !strings.HasPrefix(got, marker+"\n") {
		t.Errorf("script marker in the image = %q, want %q", got, marker)
	}
	if got := debugfs(t, fs, "cat /var/lib/grib-e2e/recipe-marker"); !strings.Contains(got, "written by the test recipe") {
		t.Errorf("recipe marker in the image = %q", got)
	}
	for _, p := range []string{"/var/lib/cloud/instance", "/var/lib/cloud/instances"} {
		if got := debugfs(t, fs, "stat "+p); !strings.Contains(got, "File not found") {
			t.Errorf("cloud-init state %s is in the image:\n%s", p, got)
		}
	}
	// The image's manifest: in the image (root's, 0644), byte for byte the
	// host's copies beside --output and kept by image ID; it names the
	// runner and the guest's packages (dpkg; no snap in the Debian guest).
	beside, err := os.ReadFile(ManifestBeside(out))
	if err != nil {
		t.Fatalf("no manifest beside %s: %v", out, err)
	}
	if got := debugfs(t, fs, "cat "+manifest.GuestPath); !strings.HasPrefix(got, string(beside)) {
		t.Errorf("%s in the image is not the host's copy:\n%s\nhost:\n%s", manifest.GuestPath, got, beside)
	}
	if got := debugfs(t, fs, "stat "+manifest.GuestPath); !strings.Contains(got, "Mode:  0644") || !strings.Contains(got, "User:     0") {
		t.Errorf("%s: want root's, mode 0644:\n%s", manifest.GuestPath, got)
	}
	m, err := manifest.Parse(beside)
	if err != nil {
		t.Fatal(err)
	}
	hasBash := false
	for _, p := range m.Packages {
		hasBash = hasBash || p.Name == "bash"
	}
	if m.Runner.Version != e2eRunnerVersion || m.Runner.SHA256 != e2eRunnerSHA256 || !hasBash || len(m.Snaps) != 0 ||
		m.BaseImage.SHA256 == "" || m.RecipeSHA256 == "" || m.ImageName != imageName {
		t.Errorf("manifest: runner %+v, %d packages (bash: %v), %d snaps, base %+v, recipe %q, image %q",
			m.Runner, len(m.Packages), hasBash, len(m.Snaps), m.BaseImage, m.RecipeSHA256, m.ImageName)
	}
	state, _ := config.StateDir(env.getenv, prefix)
	if kept, err := os.ReadFile(config.ManifestFile(config.ManifestsDir(state), id)); err != nil || !bytes.Equal(kept, beside) {
		t.Errorf("the manifest kept for image %s is not the one beside the output: %v", id, err)
	}
	for _, needle := range forms {
		if bytes.Contains(beside, []byte(needle)) {
			t.Errorf("the manifest holds the secret (as %q)", needle)
		}
		if fileContains(t, raw, []byte(needle)) {
			t.Errorf("the image's disk holds the secret (as %q)", needle)
		}
	}
	for _, line := range privLines {
		if at := fileIndex(t, raw, []byte(line)); at >= 0 {
			part := firstPartitionOffset(t, raw)
			block := (at - part) / 4096
			t.Errorf("the image's disk holds a line of the private host key at byte %d (file system block %d: %s)",
				at, block, strings.TrimSpace(debugfs(t, fs, fmt.Sprintf("icheck %d", block))))
		}
	}
	if got := debugfs(t, fs, "ls -l /etc/ssh"); !strings.Contains(got, "sshd_config") || strings.Contains(got, "ssh_host_") {
		t.Errorf("/etc/ssh in the image: want sshd_config and no ssh_host_* files:\n%s", got)
	}

	// The published image.
	c := testenv.MustConnect(t, ctx, testenv.UploadCloud)
	im, err := images.Get(ctx, c.Image, id).Extract()
	if err != nil {
		t.Fatal(err)
	}
	sum := fileMD5(t, out)
	if im.Status != images.ImageStatusActive || im.Name != imageName || im.Checksum != sum || im.DiskFormat != "qcow2" ||
		im.Visibility != images.ImageVisibilityPrivate {
		t.Errorf("image %s: status %s, name %q, checksum %s (file %s), disk_format %s, visibility %s",
			id, im.Status, im.Name, im.Checksum, sum, im.DiskFormat, im.Visibility)
	}
	want := map[string]string{
		PropArchitecture: "x86_64", PropOSDistro: "ubuntu", PropOSVersion: "24.04", PropOSType: "linux",
		PropPublished: "true", PropPrefix: prefix, PropBase: "noble", PropArch: "x64", PropBuilderVersion: "e2e-test",
	}
	for k, v := range want {
		if got := fmt.Sprint(im.Properties[k]); got != v {
			t.Errorf("property %s = %q, want %q", k, got, v)
		}
	}
	if got := fmt.Sprint(im.Properties[PropManifestSHA256]); got != manifest.SHA256(beside) {
		t.Errorf("property %s = %q, want the manifest's %s", PropManifestSHA256, got, manifest.SHA256(beside))
	}
	if fmt.Sprint(im.Properties[PropBuildID]) == "" || im.Properties[PropBuildTime] == nil {
		t.Errorf("build ID or time missing: %v", im.Properties)
	}
}

// The runner release the end-to-end build records (its --user-data
// installs none; the pin is recorded in the manifest).
const (
	e2eRunnerVersion = "2.330.0"
	e2eRunnerSHA256  = "af5c33fa94f3cc33b8e97937939136a6b04197e6dadfcfb3b6e33ae1bf41e79a"
)

// writeFileIn writes content to dir/name (0600).
func writeFileIn(t *testing.T, dir, name, content string) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// debugfs runs one read-only debugfs request on the file system fs and
// returns what it printed: the request's output, then its errors (debugfs
// prints its banner and errors such as "File not found" on stderr).
func debugfs(t *testing.T, fs, request string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("debugfs", "-R", request, fs)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("debugfs -R %q: %v\n%s%s", request, err, stdout.String(), stderr.String())
	}
	return stdout.String() + stderr.String()
}

// firstPartitionOffset reads the MBR of a raw disk: the first partition's
// start in bytes.
func firstPartitionOffset(t *testing.T, raw string) int64 {
	t.Helper()
	f, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mbr := make([]byte, 512)
	if _, err := io.ReadFull(f, mbr); err != nil {
		t.Fatal(err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xAA {
		t.Fatal("the image has no MBR")
	}
	lba := binary.LittleEndian.Uint32(mbr[446+8:])
	if lba == 0 {
		t.Fatal("the image's first partition is empty")
	}
	return int64(lba) * 512
}

// fileContains reports whether the file holds needle anywhere.
func fileContains(t *testing.T, path string, needle []byte) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4<<20+len(needle))
	carry := 0
	for {
		n, err := io.ReadFull(f, buf[carry:])
		if bytes.Contains(buf[:carry+n], needle) {
			return true
		}
		if err != nil {
			return false
		}
		carry = copy(buf, buf[carry+n-len(needle):carry+n])
	}
}

// fileIndex is the offset of needle's first occurrence in the file at
// path, or -1.
func fileIndex(t *testing.T, path string, needle []byte) int64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return int64(bytes.Index(data, needle))
}

func fileMD5(t *testing.T, path string) string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := md5.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// deleteImages removes every image named name from cloud (the test's own).
func deleteImages(t *testing.T, cloud, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := testenv.Connect(ctx, cloud)
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	ims, err := testenv.ImagesNamed(ctx, c.Image, name)
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	for _, im := range ims {
		if err := images.Delete(ctx, c.Image, im.ID).ExtractErr(); err != nil {
			t.Errorf("cleanup: deleting image %s: %v", im.ID, err)
		}
	}
}

// recordLocalBoot adds a local guest boot to the test driver's boot record,
// so that CI counts it with the others (the format of testenv.GuestBoots).
func recordLocalBoot(t *testing.T, name string, vm *qemu.VM, image string) {
	f, err := os.OpenFile(testenv.GuestBootsFile(), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Logf("guest boot not recorded: %v", err)
		return
	}
	defer f.Close()
	size := int64(0)
	if fi, err := os.Stat(image); err == nil {
		size = fi.Size()
	}
	fmt.Fprintf(f, "%s\t%s\tlocal-qemu-%d\tlocal\t%s\t%d\t%s\n",
		time.Now().UTC().Format(time.RFC3339), name, vm.PID(), filepath.Base(image), size, vm.Accel())
}

// hostListener is a TCP listener on this host's 127.0.0.1 that counts the
// connections it accepts.
type hostListener struct {
	port int
	mu   sync.Mutex
	n    int
}

func (h *hostListener) accepted() int { h.mu.Lock(); defer h.mu.Unlock(); return h.n }

func loopbackListener(t *testing.T) *hostListener {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	h := &hostListener{port: l.Addr().(*net.TCPAddr).Port}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.n++
			h.mu.Unlock()
			c.Close()
		}
	}()
	return h
}

// onlyLoopbackPasst puts a passt first on PATH that runs the real one with
// IPv4 only and its outbound sockets bound to 127.0.0.1, so that the
// guest's network reaches no address off loopback (the tests' network
// rule). The mapping of the gateway to the host, which --no-map-gw turns
// off, is not affected: without --no-map-gw the probes would arrive.
func onlyLoopbackPasst(t *testing.T) {
	t.Helper()
	real, err := exec.LookPath("passt")
	if err != nil {
		t.Fatalf("passt is not installed (the local builder's guest network): %v", err)
	}
	dir := t.TempDir()
	wrapper := "#!/bin/sh\nexec '" + real + "' --ipv4-only --outbound 127.0.0.1 \"$@\"\n"
	if err := os.WriteFile(filepath.Join(dir, "passt"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}
