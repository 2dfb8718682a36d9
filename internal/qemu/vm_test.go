package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// These tests boot boot-sector "guests" (a few instructions, no OS) under
// TCG: they exercise qemu's life cycle, the console, QMP, the SSH forward,
// the export and the cleanup in about a second each, without a real guest.

const testMarker = "GRIB-TEST-GUEST-UP"

// bootDiskImage writes a raw 1 MiB disk whose guest prints testMarker and halts.
func bootDiskImage(t *testing.T) (path string, sector []byte) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "base.raw")
	sector = bootSector(testMarker+"\r\n", false)
	if err := writeBootDisk(path, sector); err != nil {
		t.Fatal(err)
	}
	return path, sector
}

func testSpec(t *testing.T, base string) Spec {
	requireTools(t, "genisoimage")
	return Spec{BaseImage: base, Arch: config.ArchX64, Accel: AccelTCG, MemoryMiB: 32, CPUs: 1,
		UserData: []byte("#cloud-config\n"), Isolated: true, TempDir: t.TempDir()}
}

func waitConsole(t *testing.T, vm *VM, want string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := vm.ConsoleOutput(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, want) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("console never showed %q; it holds %q", want, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("%s still holds %v", dir, names)
	}
}

func TestVMLifecycleAndExport(t *testing.T) {
	requireX86Qemu(t)
	base, sector := bootDiskImage(t)
	spec := testSpec(t, base)
	spec.DiskSize = 8 << 20
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vm, err := Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	pid := vm.PID()
	if filepath.Dir(vm.Dir()) != spec.TempDir {
		t.Errorf("work dir %s is not under TempDir %s", vm.Dir(), spec.TempDir)
	}
	if fi, err := os.Stat(vm.Dir()); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("work dir mode: %v, %v; want 0700", fi.Mode(), err)
	}
	waitConsole(t, vm, testMarker)

	host, port, _ := net.SplitHostPort(vm.SSHAddr())
	if host != "127.0.0.1" {
		t.Errorf("SSH address %s is not on 127.0.0.1", vm.SSHAddr())
	}
	if n, _ := strconv.Atoi(port); n < lowestPort {
		t.Errorf("SSH port %s below %d", port, lowestPort)
	}
	conn, err := net.DialTimeout("tcp", vm.SSHAddr(), 5*time.Second)
	if err != nil {
		t.Fatalf("the SSH forward does not listen: %v", err)
	}
	conn.Close()

	out := filepath.Join(t.TempDir(), "built.qcow2")
	if err := vm.Export(ctx, out, nil); err == nil || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("Export of a running VM: %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a refused export left %s: %v", out, err)
	}

	// The boot-sector guest has no ACPI: it ignores Powerdown. quit ends qemu.
	if err := vm.Powerdown(ctx); err != nil {
		t.Fatalf("Powerdown: %v", err)
	}
	wctx, wcancel := context.WithTimeout(ctx, time.Second)
	if err := vm.Wait(wctx); err == nil {
		t.Fatal("Wait returned before qemu exited")
	}
	wcancel()
	if !vm.Running() {
		t.Fatal("qemu stopped although the guest ignores powerdown")
	}
	if _, err := vm.qmp.execute(ctx, "quit", nil); err != nil && !strings.Contains(err.Error(), "closed") {
		t.Fatal(err)
	}
	if err := vm.Wait(ctx); err != nil {
		t.Fatalf("Wait after quit: %v", err)
	}
	if ev := vm.Shutdown(); ev == nil || ev.Guest || ev.Reason != "host-qmp-quit" {
		t.Errorf("Shutdown event %+v, want host-qmp-quit", ev)
	}

	var pcts []float64
	if err := vm.Export(ctx, out, func(p float64) { pcts = append(pcts, p) }); err != nil {
		t.Fatal(err)
	}
	if len(pcts) == 0 || pcts[len(pcts)-1] != 100 {
		t.Errorf("progress %v, want it to end at 100", pcts)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("exported file: %v, %v; want mode 0644", fi, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(out))
	if len(entries) != 1 {
		t.Errorf("beside the export: %v, want only the image", entries)
	}
	info, err := exec.Command("qemu-img", "info", "--output=json", out).Output()
	if err != nil {
		t.Fatal(err)
	}
	var ii imageInfo
	if err := json.Unmarshal(info, &ii); err != nil {
		t.Fatal(err)
	}
	if ii.Format != "qcow2" || ii.BackingFile != "" || ii.VirtualSize != 8<<20 {
		t.Errorf("exported image %+v: want standalone qcow2 of 8 MiB", ii)
	}
	raw := filepath.Join(t.TempDir(), "x.raw")
	if err := exec.Command("qemu-img", "convert", "-O", "raw", out, raw).Run(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(raw)
	if !bytes.Equal(data[:512], sector) {
		t.Error("the exported disk does not start with the base image's boot sector")
	}

	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	if !processGone(pid) {
		t.Errorf("qemu pid %d still exists after Close", pid)
	}
	assertEmptyDir(t, spec.TempDir)
}

func TestVMCloseKillsRunningQemu(t *testing.T) {
	requireX86Qemu(t)
	base, _ := bootDiskImage(t)
	spec := testSpec(t, base)
	spec.ConsoleLog = filepath.Join(t.TempDir(), "console.log")
	vm, err := Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	pid := vm.PID()
	waitConsole(t, vm, testMarker)
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	if !processGone(pid) {
		t.Fatalf("qemu pid %d survived Close", pid)
	}
	if err := vm.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	assertEmptyDir(t, spec.TempDir)
	if data, err := os.ReadFile(spec.ConsoleLog); err != nil || !strings.Contains(string(data), testMarker) {
		t.Errorf("the console log given in the spec is kept: %q, %v", data, err)
	}
	out := filepath.Join(t.TempDir(), "x.qcow2")
	if err := vm.Export(context.Background(), out, nil); err == nil {
		t.Error("Export after Close succeeded")
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a failed export left %s", out)
	}
}

func TestVMExportInterruptedLeavesNothing(t *testing.T) {
	requireX86Qemu(t)
	base, _ := bootDiskImage(t)
	spec := testSpec(t, base)
	vm, err := Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	if _, err := vm.qmp.execute(context.Background(), "quit", nil); err != nil && !strings.Contains(err.Error(), "closed") {
		t.Fatal(err)
	}
	if err := vm.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	outDir := t.TempDir()
	out := filepath.Join(outDir, "built.qcow2")
	if err := os.WriteFile(out, []byte("previous build"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = vm.Export(ctx, out, nil)
	if !errs.Is(err, errs.KindInterrupted) {
		t.Fatalf("interrupted Export: %v, want KindInterrupted", err)
	}
	if data, _ := os.ReadFile(out); string(data) != "previous build" {
		t.Errorf("an interrupted export touched the existing file: %q", data)
	}
	if entries, _ := os.ReadDir(outDir); len(entries) != 1 {
		t.Errorf("an interrupted export left temp files: %v", entries)
	}
	if err := vm.Export(context.Background(), filepath.Join(outDir, "no-such-dir", "x.qcow2"), nil); err == nil {
		t.Error("Export into a missing directory succeeded")
	}
}

func TestStartFailuresLeaveNothing(t *testing.T) {
	requireX86Qemu(t)
	// A base image that does not exist.
	spec := testSpec(t, filepath.Join(t.TempDir(), "missing.qcow2"))
	if _, err := Start(context.Background(), spec); !errs.Is(err, errs.KindUsage) {
		t.Errorf("missing base image: %v, want a usage error", err)
	}
	assertEmptyDir(t, spec.TempDir)

	// A base image with a backing file.
	dir := t.TempDir()
	under, over := filepath.Join(dir, "under.qcow2"), filepath.Join(dir, "over.qcow2")
	for _, args := range [][]string{{"create", "-q", "-f", "qcow2", under, "1M"}, {"create", "-q", "-f", "qcow2", "-b", under, "-F", "qcow2", over}} {
		if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %v: %s", args, err, out)
		}
	}
	spec = testSpec(t, over)
	if _, err := Start(context.Background(), spec); err == nil || !strings.Contains(err.Error(), "backing file") {
		t.Errorf("base with a backing file: %v", err)
	}
	assertEmptyDir(t, spec.TempDir)

	// The wrong architecture.
	base, _ := bootDiskImage(t)
	spec = testSpec(t, base)
	spec.Arch = config.ArchS390X
	if _, err := Start(context.Background(), spec); errs.ExitCode(err) != 2 {
		t.Errorf("foreign arch: %v, want exit code 2", err)
	}
	assertEmptyDir(t, spec.TempDir)
}

// fakeQemu writes a shell script standing in for qemu-system-x86_64.
func fakeQemu(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fake-qemu")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStartRetriesATakenSSHPort(t *testing.T) {
	requireX86Qemu(t)
	base, _ := bootDiskImage(t)
	count := filepath.Join(t.TempDir(), "count")
	spec := testSpec(t, base)
	spec.QEMU = fakeQemu(t, `echo run >> '`+count+`'
echo "qemu-system-x86_64: -netdev user,id=net0: Could not set up host forwarding rule 'tcp:127.0.0.1:12345-:22'" >&2
exit 1`)
	_, err := Start(context.Background(), spec)
	if err == nil || !strings.Contains(err.Error(), "could not forward SSH") || !errs.Is(err, errs.KindBuild) {
		t.Fatalf("Start = %v, want a build error about the SSH forward", err)
	}
	data, _ := os.ReadFile(count)
	if runs := strings.Count(string(data), "run"); runs != startAttempts {
		t.Errorf("qemu started %d times, want %d (a new port each time)", runs, startAttempts)
	}
	assertEmptyDir(t, spec.TempDir)
}

func TestStartReportsQemuFailure(t *testing.T) {
	requireX86Qemu(t)
	base, _ := bootDiskImage(t)
	spec := testSpec(t, base)
	spec.QEMU = fakeQemu(t, `echo "qemu-system-x86_64: -accel tcg: something is broken" >&2; exit 1`)
	_, err := Start(context.Background(), spec)
	if err == nil || !strings.Contains(err.Error(), "something is broken") || !errs.Is(err, errs.KindBuild) {
		t.Fatalf("Start = %v, want qemu's own message as a build error", err)
	}
	assertEmptyDir(t, spec.TempDir)
}

// Ctrl-C while qemu starts: the error says interrupted and the whole
// process group (here a shell and its sleeping child) is gone.
func TestStartInterruptedKillsTheGroup(t *testing.T) {
	requireX86Qemu(t)
	base, _ := bootDiskImage(t)
	pids := filepath.Join(t.TempDir(), "pids")
	spec := testSpec(t, base)
	spec.QEMU = fakeQemu(t, `sleep 300 &
echo $$ $! > '`+pids+`'
wait`)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for {
			if data, _ := os.ReadFile(pids); len(data) > 0 {
				cancel()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	_, err := Start(ctx, spec)
	if !errs.Is(err, errs.KindInterrupted) {
		t.Fatalf("Start = %v, want KindInterrupted", err)
	}
	data, _ := os.ReadFile(pids)
	for _, f := range strings.Fields(string(data)) {
		pid, _ := strconv.Atoi(f)
		if !processGone(pid) {
			t.Errorf("pid %d of qemu's group survived", pid)
		}
	}
	assertEmptyDir(t, spec.TempDir)
}

// No child of the package (qemu-img, the ISO tool, qemu, the KVM probe's
// qemu) sees this process's secrets: each gets config.ChildEnv only.
func TestChildrenSeeNoSecret(t *testing.T) {
	requireX86Qemu(t)
	requireTools(t, "genisoimage")
	base, _ := bootDiskImage(t)
	realImg, _ := exec.LookPath("qemu-img")
	realISO, _ := exec.LookPath("genisoimage")
	secrets := map[string]string{"IMAGE_BUILDER_SECRET_X": "leak-script-secret", "GITHUB_TOKEN": "leak-token",
		"OS_PASSWORD": "leak-password", "OS_APPLICATION_CREDENTIAL_SECRET": "leak-app-secret"}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	out, bin := t.TempDir(), t.TempDir()
	wrap := func(name, body string) string {
		p := filepath.Join(bin, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\nenv > '"+out+"/"+name+".'$$\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	wrap("genisoimage", `exec '`+realISO+`' "$@"`)
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH")) // where Start finds the ISO tool
	spec := testSpec(t, base)
	spec.QEMUImg = wrap("qemu-img", `exec '`+realImg+`' "$@"`)
	spec.QEMU = wrap("qemu", `echo "qemu-system-x86_64: stop here" >&2; exit 1`)
	if _, err := Start(context.Background(), spec); err == nil || !strings.Contains(err.Error(), "stop here") {
		t.Fatalf("Start = %v, want the fake qemu's failure", err)
	}
	probe := &AccelProbe{QEMU: wrap("probe-qemu", "exit 1"), openKVM: func(string) error { return nil }}
	if a, _ := probe.Accel(context.Background()); a != AccelTCG {
		t.Errorf("probe with a failing qemu chose %s", a)
	}

	seen := map[string]bool{}
	files, _ := filepath.Glob(filepath.Join(out, "*"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name, _, _ := strings.Cut(filepath.Base(f), ".")
		seen[name] = true
		for k, v := range secrets {
			if strings.Contains(string(data), v) {
				t.Errorf("%s saw %s", name, k)
			}
		}
		if !strings.Contains(string(data), "PATH=") {
			t.Errorf("%s has no PATH:\n%s", name, data)
		}
	}
	for _, name := range []string{"qemu-img", "genisoimage", "qemu", "probe-qemu"} {
		if !seen[name] {
			t.Errorf("%s never ran (ran: %v)", name, seen)
		}
	}
}
