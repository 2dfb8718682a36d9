package builder_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/build"
	. "github.com/runner-image-builder/github-runner-image-builder/internal/builder"
	"github.com/runner-image-builder/github-runner-image-builder/internal/cli"
	"github.com/runner-image-builder/github-runner-image-builder/internal/qemu"
	"github.com/runner-image-builder/github-runner-image-builder/internal/statedir"
)

// These tests run the local builder through the command line against a
// guest that never answers SSH: a blank disk, on which the firmware finds
// nothing to boot. qemu runs for real (TCG), but no operating system boots,
// so they cost seconds, not a guest boot.

// requireQemu skips t unless qemu and the seed tool are installed; with CI
// set (.ci/run installs them) it fails instead.
func requireQemu(t *testing.T) {
	t.Helper()
	for _, n := range []string{"qemu-system-x86_64", "qemu-img", "genisoimage"} {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is not installed", n)
			}
			t.Skipf("%s is not installed", n)
		}
	}
}

// localEnv is a private HOME, state and cache for one test, as KEY=VALUE.
type localEnv struct {
	dir     string
	environ []string
}

func newLocalEnv(t *testing.T, extra ...string) localEnv {
	dir := t.TempDir()
	env := []string{"HOME=" + dir, "XDG_STATE_HOME=" + filepath.Join(dir, "state"),
		"XDG_CACHE_HOME=" + filepath.Join(dir, "cache"), "PATH=" + os.Getenv("PATH")}
	return localEnv{dir: dir, environ: append(env, extra...)}
}

func (e localEnv) getenv(key string) string {
	val := ""
	for _, kv := range e.environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			val = v
		}
	}
	return val
}

// vmRecorder remembers the VMs a Local started.
type vmRecorder struct {
	mu  sync.Mutex
	vms []*qemu.VM
}

func (r *vmRecorder) add(vm *qemu.VM) { r.mu.Lock(); r.vms = append(r.vms, vm); r.mu.Unlock() }

func (r *vmRecorder) all() []*qemu.VM {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*qemu.VM(nil), r.vms...)
}

// runLocalCLI runs the command line with l as the local builder.
func runLocalCLI(ctx context.Context, l *Local, env localEnv, args ...string) (code int, stdout, stderr string) {
	backend := cli.Backend{Builds: &build.Builds{OpenStack: l.OpenStack, Local: l}, Init: l.Init}
	var out, errOut bytes.Buffer
	app := &cli.App{Stdout: &out, Stderr: &errOut, Environ: env.environ, Backend: backend, GOARCH: "amd64"}
	code = app.Main(ctx, args)
	return code, out.String(), errOut.String()
}

// assertNoQemu checks that every VM's qemu process (and group) is gone.
func assertNoQemu(t *testing.T, vms []*qemu.VM) {
	t.Helper()
	if len(vms) == 0 {
		t.Fatal("no VM was started")
	}
	for _, vm := range vms {
		if !processGroupGone(vm.PID()) {
			t.Errorf("qemu pid %d (or its process group) is still there", vm.PID())
		}
		if _, err := os.Stat(vm.Dir()); !os.IsNotExist(err) {
			t.Errorf("the VM's work directory %s is still there", vm.Dir())
		}
	}
}

// processGroupGone reports whether no process of group pgid is left
// (killed processes are reaped within moments; allow 10 s).
func processGroupGone(pgid int) bool {
	for range 100 {
		if syscall.Kill(-pgid, 0) == syscall.ESRCH && syscall.Kill(pgid, 0) == syscall.ESRCH {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// assertOnly checks that dir holds exactly the names given.
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("%s holds %v, want %v", dir, got, names)
	}
}

// blankDisk writes a 1 MiB raw disk of zeros: nothing boots from it.
func blankDisk(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "blank.raw")
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func silentGuestArgs(t *testing.T, out string, extra ...string) []string {
	userData := filepath.Join(t.TempDir(), "user-data")
	if err := os.WriteFile(userData, []byte("#cloud-config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"run", "silent-test", "--builder", "local", "--arch", "x64", "--isolated",
		"--base-image-file", blankDisk(t), "--user-data", userData, "--output", out}
	return append(args, extra...)
}

func testLocal(env localEnv, rec *vmRecorder) *Local {
	return &Local{
		OpenStack: &OpenStack{Getenv: env.getenv},
		Accel:     &qemu.AccelProbe{Force: qemu.AccelTCG},
		MemoryMiB: 64, CPUs: 1,
		OnVM: rec.add,
	}
}

// A guest that never answers SSH fails at --ssh-timeout with a clear
// error, and leaves no qemu, no temporary file and nothing at --output.
func TestLocalSSHDeadline(t *testing.T) {
	requireQemu(t)
	for _, tt := range []struct {
		name  string
		flags []string
		want  string
	}{
		// The default: the pinned host key; the dial is retried until the
		// deadline, which is --ssh-timeout alone.
		{"pinned host key", nil, "no SSH connection to 127.0.0.1:"},
		// Without the host key check, the same.
		{"any host key", []string{"--insecure-skip-host-key-check"}, "no SSH connection to 127.0.0.1:"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := newLocalEnv(t)
			rec := &vmRecorder{}
			outDir := t.TempDir()
			out := filepath.Join(outDir, "image.qcow2")
			start := time.Now()
			code, stdout, stderr := runLocalCLI(context.Background(), testLocal(env, rec), env,
				silentGuestArgs(t, out, append([]string{"--ssh-timeout", "4s"}, tt.flags...)...)...)
			took := time.Since(start)
			if code != 6 {
				t.Fatalf("exit code %d, want 6 (build failed); stderr %s", code, stderr)
			}
			for _, want := range []string{"4s (raise it with --ssh-timeout)", tt.want} {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if stdout != "" || strings.Count(stderr, "Error: ") != 1 || !strings.HasPrefix(lines[len(lines)-1], "Error: step ssh") {
				t.Errorf("want nothing on stdout and the error as stderr's last line; got %q / %q", stdout, stderr)
			}
			if took > 3*time.Minute {
				t.Errorf("the build took %s to fail at a 4 s SSH deadline", took)
			}
			assertNoQemu(t, rec.all())
			assertOnly(t, outDir) // no image, no export, no VM directory
			assertOnly(t, filepath.Join(env.dir, "state", "github-runner-image-builder", "_empty"),
				statedir.KeyFile, statedir.PublicKeyFile, "key.lock", LocalLockName(out))
		})
	}
}

// Ctrl-C while the guest boots: interrupted (exit 130), nothing left.
func TestLocalInterrupted(t *testing.T) {
	requireQemu(t)
	env := newLocalEnv(t)
	rec := &vmRecorder{}
	l := testLocal(env, rec)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l.OnVM = func(vm *qemu.VM) { rec.add(vm); cancel() }
	outDir := t.TempDir()
	code, _, stderr := runLocalCLI(ctx, l, env, silentGuestArgs(t, filepath.Join(outDir, "image.qcow2"))...)
	if code != 130 {
		t.Fatalf("exit code %d, want 130; stderr %s", code, stderr)
	}
	assertNoQemu(t, rec.all())
	assertOnly(t, outDir)
}

// init --builder local touches no cloud: it checks (or downloads into the
// cache) the base images. With --base-image-file the file is checked
// against --base-image-sha256.
func TestLocalInit(t *testing.T) {
	env := newLocalEnv(t) // no clouds.yaml: any cloud access would fail
	img := blankDisk(t)
	sum := sha256.Sum256(make([]byte, 1<<20))
	l := testLocal(env, &vmRecorder{})
	args := []string{"init", "--builder", "local", "--arch", "x64", "--base-image", "noble", "--base-image-file", img}
	if code, _, stderr := runLocalCLI(context.Background(), l, env, append(args, "--base-image-sha256", hex.EncodeToString(sum[:]))...); code != 0 {
		t.Fatalf("init: exit %d: %s", code, stderr)
	}
	code, _, stderr := runLocalCLI(context.Background(), l, env, append(args, "--base-image-sha256", strings.Repeat("0", 64))...)
	if code != 6 || !strings.Contains(stderr, "not the expected") {
		t.Fatalf("init with a wrong digest: exit %d: %s", code, stderr)
	}
}
