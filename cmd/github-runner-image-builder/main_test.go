package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// A second Ctrl-C ends the process at once with 130, naming what is left
// and the sweep command, without waiting for the cleanups. The run is a local build of a blank disk
// (no OS, so no guest ever answers SSH): it stays in its SSH step until the
// signals come.
func TestSecondInterruptExitsAt130(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the local builder test runs on x86_64 hosts")
	}
	for _, tool := range []string{"qemu-system-x86_64", "qemu-img", "passt"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is needed: %v", tool, err)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "grib")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	disk := filepath.Join(dir, "blank.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", disk, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v\n%s", err, out)
	}
	userData := filepath.Join(dir, "user-data")
	if err := os.WriteFile(userData, []byte("#cloud-config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	// Not --isolated: the guest's network is a passt process, which must go too.
	cmd := exec.CommandContext(ctx, bin, "run", "demo", "--builder", "local", "--arch", "x64",
		"--prefix", "sig2", "--base-image-file", disk, "--user-data", userData,
		"--output", filepath.Join(dir, "out.qcow2"), "--ssh-timeout", "10m")
	cmd.Env = append(os.Environ(), "XDG_STATE_HOME="+filepath.Join(dir, "state"), "XDG_CACHE_HOME="+filepath.Join(dir, "cache"))
	var stderr testenv.LockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the build is in its SSH step, then interrupt twice.
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(stderr.String(), "step=ssh") {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("the build never reached its ssh step:\n%s", stderr.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out, _ := exec.Command("pgrep", "-f", "passt.*"+dir).Output(); len(bytes.TrimSpace(out)) == 0 {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("no passt runs for the guest:\n%s", stderr.String())
	}
	// The ssh step ends at once on the first signal; the second must come
	// while the cleanups (qemu, passt, the work directory) still run: a
	// signal every 5 ms until the process is gone.
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	exited := make(chan struct{})
	stopSignals := sync.OnceFunc(func() { close(exited) })
	defer stopSignals()
	go func() {
		for {
			_ = cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-exited:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	var err error
	select {
	case err = <-waited:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-waited
		t.Fatalf("still running 5 s after the second SIGINT:\n%s", stderr.String())
	}
	stopSignals()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 130 {
		t.Fatalf("exit %v, want 130:\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "sweep --prefix sig2 --older-than 1m --dry-run") {
		t.Errorf("stderr lacks the sweep command:\n%s", stderr.String())
	}
	// What is left is named: the VM's work directory beside --output.
	if !strings.Contains(stderr.String(), "left: directory "+filepath.Join(dir, ".grib-qemu-")) {
		t.Errorf("stderr does not name the qemu directory left in %s:\n%s", dir, stderr.String())
	}
	// qemu and passt die with the builder (parent-death signal; passt also
	// quits when qemu closes its socket) even without cleanup.
	for _, proc := range []string{"qemu-system", "passt"} {
		for i := 0; ; i++ {
			out, _ := exec.Command("pgrep", "-f", proc+".*"+dir).Output()
			if len(bytes.TrimSpace(out)) == 0 {
				break
			}
			if i == 50 {
				t.Fatalf("%s of the build still running: %s", proc, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}
