package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
)

// Accel is a qemu accelerator.
type Accel string

// The accelerators the local builder uses.
const (
	AccelKVM Accel = "kvm" // hardware virtualisation, when it truly runs guests
	AccelTCG Accel = "tcg" // software emulation: always works, ~10x slower
)

// ParseAccel accepts "kvm" or "tcg" ("" is the empty Accel: probe).
func ParseAccel(s string) (Accel, error) {
	switch a := Accel(strings.ToLower(strings.TrimSpace(s))); a {
	case "", AccelKVM, AccelTCG:
		return a, nil
	}
	return "", fmt.Errorf("qemu accelerator %q: use kvm or tcg", s)
}

const (
	defaultKVMDevice    = "/dev/kvm"
	defaultProbeTimeout = 10 * time.Second
	// probeMarker is what the probe guest writes to its serial port.
	probeMarker = "GRIB-ACCEL-PROBE-OK"
)

// AccelProbe decides whether KVM truly runs guests on this host, once: the
// first Accel call probes, later calls return the cached answer. Keep one
// per process (the builder's backend holds it). The zero value probes with
// the host's qemu and /dev/kvm.
//
// A /dev/kvm that exists is not evidence: on nested "PVM" hosts it opens,
// qemu starts, and no stock guest ever executes an instruction. So KVM is
// chosen only when a tiny real guest, started with -accel kvm -cpu host,
// runs its own code: on x86_64 a boot sector that writes a marker to the
// serial port and exits qemu through isa-debug-exit; on aarch64 the UEFI
// firmware printing anything on the serial port.
type AccelProbe struct {
	Force     Accel         // when set, used as is (no probe)
	QEMU      string        // qemu-system binary; "" is the host's
	KVMDevice string        // "" is /dev/kvm
	Timeout   time.Duration // bound of the probe guest's run; 0 is 10 s
	Log       *slog.Logger  // nil discards
	// Getenv is the environment the probe qemu's minimal one is taken
	// from (config.ChildEnv); nil is os.Getenv.
	Getenv func(string) string

	// Hooks for tests; nil means the real thing.
	openKVM  func(path string) error
	runProbe func(ctx context.Context, p *AccelProbe) error

	mu     sync.Mutex
	done   bool
	accel  Accel
	reason string
}

// Accel returns the accelerator to use and why. It never fails: anything
// short of a guest that ran under KVM means TCG. An interrupted probe is
// not cached.
func (p *AccelProbe) Accel(ctx context.Context) (Accel, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return p.accel, p.reason
	}
	a, reason := p.decide(ctx)
	if ctx.Err() == nil {
		p.done, p.accel, p.reason = true, a, reason
		p.logger().Info("qemu accelerator chosen", "accel", string(a), "reason", reason)
	}
	return a, reason
}

func (p *AccelProbe) decide(ctx context.Context) (Accel, string) {
	if p.Force != "" {
		return p.Force, "forced"
	}
	dev := p.KVMDevice
	if dev == "" {
		dev = defaultKVMDevice
	}
	open := p.openKVM
	if open == nil {
		open = openReadWrite
	}
	if err := open(dev); err != nil {
		return AccelTCG, fmt.Sprintf("%s is not usable: %v", dev, err)
	}
	run := p.runProbe
	if run == nil {
		run = realProbe
	}
	if err := run(ctx, p); err != nil {
		return AccelTCG, fmt.Sprintf("%s opens but a KVM guest did not run: %v", dev, err)
	}
	return AccelKVM, "a KVM guest ran its own code"
}

func (p *AccelProbe) logger() *slog.Logger {
	if p.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Log
}

func openReadWrite(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// realProbe runs the probe guest under KVM.
func realProbe(ctx context.Context, p *AccelProbe) error {
	m, err := hostMachine(config.HostArch(goarch()), goarch())
	if err != nil {
		return err
	}
	bin := p.QEMU
	if bin == "" {
		bin = m.binary
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = defaultProbeTimeout
	}
	var sector []byte
	if m.binary == "qemu-system-x86_64" {
		sector = bootSector(probeMarker+"\r\n", true)
	}
	getenv := p.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	return runProbeGuest(ctx, config.ChildEnv(getenv), bin, m, AccelKVM, m.kvmCPU, timeout, sector)
}

// runProbeGuest boots a probe guest of machine m with accel and cpu and
// waits up to timeout for probeMarker on its serial console. With sector
// (x86) the guest boots that boot sector (and may leave qemu through
// isa-debug-exit); without, it runs the machine's firmware and any console
// output counts. qemu's whole environment is env. It is killed and its
// files removed before it returns.
func runProbeGuest(ctx context.Context, env []string, bin string, m machine, accel Accel, cpu string, timeout time.Duration, sector []byte) error {
	dir, err := os.MkdirTemp("", "grib-accel-probe-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	console := filepath.Join(dir, "console")
	args := []string{"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"}
	args = append(args, m.args...)
	args = append(args, "-accel", string(accel), "-cpu", cpu, "-m", "64",
		"-chardev", "file,id=probe,path="+optValue(console), "-serial", "chardev:probe")
	marker := []byte(probeMarker)
	if sector != nil {
		disk := filepath.Join(dir, "disk")
		if err := writeBootDisk(disk, sector); err != nil {
			return err
		}
		args = append(args, "-drive", "file="+optValue(disk)+",format=raw,if=virtio,readonly=on",
			"-device", "isa-debug-exit,iobase=0xf4,iosize=0x04")
	} else {
		marker = nil // any output: the firmware is guest code
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(pctx, bin, args...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	seen := func() bool {
		out, _ := os.ReadFile(console)
		if marker == nil {
			return len(out) > 0
		}
		return bytes.Contains(out, marker)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			if seen() {
				return nil
			}
			msg := lastLine(stderr.String())
			if msg == "" && err != nil {
				msg = err.Error()
			}
			if msg == "" {
				msg = "qemu exited without the guest's marker"
			}
			return errors.New(msg)
		case <-tick.C:
			if seen() {
				_ = killGroup(cmd.Process.Pid)
				<-exited
				return nil
			}
		case <-pctx.Done():
			<-exited // CommandContext killed the group
			if seen() {
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("no output from the guest within %s", timeout)
		}
	}
}

// bootSector returns a 512-byte x86 boot sector that writes msg to COM1 and
// then, if exit, leaves qemu through isa-debug-exit (port 0xf4, qemu exits
// with status 1); otherwise it halts for ever.
func bootSector(msg string, exit bool) []byte {
	code := []byte{
		0xFA,       // cli
		0x31, 0xC0, // xor ax, ax
		0x8E, 0xD8, // mov ds, ax
		0xBE, 0x00, 0x00, // mov si, msg (patched below)
		0xBA, 0xF8, 0x03, // mov dx, 0x3f8
		0xAC,       // next: lodsb
		0x84, 0xC0, // test al, al
		0x74, 0x03, // jz done (+3)
		0xEE,       // out dx, al
		0xEB, 0xF8, // jmp next (-8)
	}
	if exit { // done:
		code = append(code,
			0xBA, 0xF4, 0x00, // mov dx, 0xf4
			0x30, 0xC0, // xor al, al
			0xEE, // out dx, al
		)
	}
	code = append(code, 0xF4, 0xEB, 0xFD) // halt: hlt; jmp halt (-3)
	addr := 0x7C00 + len(code)
	code[6], code[7] = byte(addr), byte(addr>>8)
	code = append(code, msg...)
	code = append(code, 0)
	if len(code) > 510 {
		panic("qemu: boot sector message too long")
	}
	sector := make([]byte, 512)
	copy(sector, code)
	sector[510], sector[511] = 0x55, 0xAA
	return sector
}

// writeBootDisk writes a raw disk of 1 MiB whose first sector is sector
// (SeaBIOS does not boot from a disk of one sector).
func writeBootDisk(path string, sector []byte) error {
	if err := os.WriteFile(path, sector, 0o600); err != nil {
		return err
	}
	return os.Truncate(path, 1<<20)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
