package qemu

import (
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// requireTools skips t unless the host tools are installed; under CI (CI
// set) a missing tool fails the test instead: .ci/run installs them.
func requireTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is not installed (CI installs qemu-system-x86, qemu-utils, genisoimage)", n)
			}
			t.Skipf("%s is not installed", n)
		}
	}
}

// requireX86Qemu is requireTools for the boot-sector VMs, which are x86 code.
func requireX86Qemu(t *testing.T) {
	t.Helper()
	if runtime.GOARCH != "amd64" {
		t.Skip("the test VMs boot an x86 boot sector")
	}
	requireTools(t, "qemu-system-x86_64", "qemu-img")
}

// processGone reports whether no process has pid any more. A killed
// process whose parent died too is reaped by init shortly after: allow 10 s.
func processGone(pid int) bool {
	for range 100 {
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}
