package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// Defaults of Spec.
const (
	DefaultMemoryMiB = 2048
	DefaultCPUs      = 2
)

const (
	startTimeout      = 60 * time.Second // qemu up and its QMP socket answering
	startAttempts     = 3                // new SSH ports tried when qemu cannot bind one
	killWait          = 10 * time.Second // after SIGKILL, for the process to be reaped
	consoleReadLimit  = 4 << 20          // bytes of the console ConsoleOutput returns (the end)
	qemuLogTail       = 2 << 10          // bytes of qemu's own log quoted in errors
	hostfwdBindFailed = "Could not set up host forwarding rule"
)

// Spec describes one VM.
type Spec struct {
	// BaseImage is the base image file (qcow2 or raw, no backing file). It
	// is only read: the guest writes to an overlay.
	BaseImage string
	// Arch is the architecture to run; it must be the host's.
	Arch      config.Arch
	MemoryMiB int // 0 is DefaultMemoryMiB
	CPUs      int // 0 is DefaultCPUs; never more than the host has
	// DiskSize is the least virtual size of the guest's disk in bytes: the
	// base image's size is grown to it (cloud-init grows the root file
	// system on first boot). 0 keeps the base image's size.
	DiskSize int64
	// UserData and MetaData are the NoCloud seed's files; empty MetaData
	// means a fresh instance-id and Hostname. They must hold no secret: the
	// seed is readable by the guest for its whole life.
	UserData []byte
	MetaData []byte
	Hostname string // "" is grib-builder
	// AuthorizedKeys are SSH public keys ("type base64 comment") for the
	// guest's default user, written to the generated meta-data.
	AuthorizedKeys []string
	// Isolated restricts the guest's network (slirp with restrict=on): it
	// reaches nothing, not even the host; only the SSH forward reaches it.
	// Otherwise passt gives it the host's outward network, but never the
	// host's loopback (see passt.go).
	Isolated bool
	// ConsoleLog, when set, is where the serial console is written (and
	// kept); otherwise it lives in the VM's temporary directory.
	ConsoleLog string
	// Accel is the accelerator; "" probes (once per call: pass the answer
	// of a long-lived AccelProbe instead).
	Accel Accel
	// TempDir is where the VM's private work directory (overlay, seed,
	// sockets) is made; "" is os.TempDir(). The overlay grows by what the
	// guest writes: put it on a file system with room.
	TempDir string
	// QEMU, QEMUImg and Passt are the programs; "" finds them on PATH.
	// Passt is needed only when not Isolated.
	QEMU, QEMUImg, Passt string
	// Getenv is the environment the programs' minimal one is taken from
	// (config.ChildEnv: PATH, HOME, locale, TMPDIR, TZ; no secret); nil
	// is os.Getenv.
	Getenv func(string) string
	Log    *slog.Logger
}

// VM is a running (or exited) qemu guest. Close it when done.
type VM struct {
	dir     string
	overlay string
	console string
	qemuLog string
	qemuImg string
	env     []string // every child's whole environment (config.ChildEnv)
	passt   string   // the passt program; "" when isolated
	dns     []string
	port    int
	accel   Accel
	log     *slog.Logger

	cmd    *exec.Cmd
	net    *passtNet // the guest's network unless isolated
	qmp    *qmp
	exited chan struct{} // closed when the qemu process was reaped
	result error         // cmd.Wait's error, valid once exited is closed

	closeOnce sync.Once
	closeErr  error
}

// Start prepares and boots a VM: it returns once qemu runs and answers on
// its QMP socket (the guest is still booting). On error nothing is left.
func Start(ctx context.Context, spec Spec) (_ *VM, err error) {
	log := spec.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := hostMachine(spec.Arch, goarch())
	if err != nil {
		return nil, err
	}
	if spec.BaseImage == "" {
		return nil, errs.New(errs.KindInternal, "qemu.Start: no base image")
	}
	qemuBin, err := findTool(spec.QEMU, m.binary, "qemu-system-x86 (or qemu-system-arm on arm64)")
	if err != nil {
		return nil, err
	}
	qemuImg, err := findTool(spec.QEMUImg, "qemu-img", "qemu-utils")
	if err != nil {
		return nil, err
	}
	passt := ""
	if !spec.Isolated {
		if passt, err = findPasst(spec.Passt); err != nil {
			return nil, err
		}
	}
	iso, err := findISOTool(exec.LookPath)
	if err != nil {
		return nil, errs.Wrap(errs.KindUsage, err, "")
	}
	getenv := spec.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	env := config.ChildEnv(getenv)
	accel := spec.Accel
	if accel == "" {
		var reason string
		accel, reason = (&AccelProbe{QEMU: qemuBin, Getenv: getenv, Log: log}).Accel(ctx)
		log.Debug("qemu accelerator", "accel", string(accel), "reason", reason)
	}

	dir, err := os.MkdirTemp(spec.TempDir, ".grib-qemu-*")
	if err != nil {
		return nil, fmt.Errorf("VM work directory: %w", err)
	}
	vm := &VM{dir: dir, overlay: filepath.Join(dir, "disk.qcow2"), console: spec.ConsoleLog,
		qemuLog: filepath.Join(dir, "qemu.log"), qemuImg: qemuImg, env: env, accel: accel, log: log}
	if passt != "" {
		vm.passt, vm.dns = passt, guestDNS(os.ReadFile)
		if vm.dns != nil {
			log.Debug("guest DNS: the host's resolvers are on loopback; passing their upstream servers", "dns", vm.dns)
		}
	}
	if vm.console == "" {
		vm.console = filepath.Join(dir, "console.log")
	}
	defer func() {
		if err != nil {
			_ = vm.Close()
		}
	}()

	base, err := filepath.Abs(spec.BaseImage)
	if err != nil {
		return nil, err
	}
	info, err := inspectImage(ctx, env, qemuImg, base)
	if err != nil {
		return nil, err
	}
	if _, err := runTool(ctx, env, qemuImg, overlayArgs(base, info.Format, vm.overlay, max(info.VirtualSize, spec.DiskSize))...); err != nil {
		return nil, fmt.Errorf("creating the VM's overlay: %w", err)
	}
	hostname := spec.Hostname
	if hostname == "" {
		hostname = defaultHostname
	}
	seed := filepath.Join(dir, "seed.iso")
	if err := writeSeed(ctx, env, iso, dir, seed, seedFiles(spec.UserData, spec.MetaData, newInstanceID(), hostname, spec.AuthorizedKeys)); err != nil {
		return nil, err
	}
	l := launch{
		machine: m, accel: accel, memoryMiB: spec.MemoryMiB, cpus: spec.CPUs,
		overlay: vm.overlay, seed: seed, console: vm.console, qmp: filepath.Join(dir, "qmp.sock"),
		isolated: spec.Isolated, name: "grib-" + filepath.Base(dir)[len(".grib-qemu-"):],
	}
	if l.memoryMiB <= 0 {
		l.memoryMiB = DefaultMemoryMiB
	}
	if l.cpus <= 0 {
		l.cpus = DefaultCPUs
	}
	l.cpus = min(l.cpus, runtime.NumCPU())

	tried := map[int]bool{}
	for attempt := 1; ; attempt++ {
		l.sshPort, err = portPicker{avoid: func(p int) bool { return tried[p] }}.pick()
		if err != nil {
			return nil, err
		}
		tried[l.sshPort] = true
		err = vm.boot(ctx, qemuBin, l)
		if err == nil {
			break
		}
		if !errors.Is(err, errPortTaken) {
			return nil, err
		}
		if attempt == startAttempts {
			return nil, errs.Wrap(errs.KindBuild, err, "qemu could not forward SSH from 127.0.0.1 (%d ports tried)", attempt)
		}
		log.Debug("qemu could not bind the SSH port; trying another", "port", l.sshPort)
	}
	vm.port = l.sshPort
	log.Info("VM started", "pid", vm.cmd.Process.Pid, "accel", string(accel), "ssh", vm.SSHAddr(),
		"memory_mib", l.memoryMiB, "cpus", l.cpus, "isolated", spec.Isolated, "passt", vm.net != nil)
	return vm, nil
}

var errPortTaken = errors.New("the SSH forward's port was taken")

// boot starts qemu with l and waits for its QMP socket. On failure qemu is
// gone again and its log truncated for the next attempt.
func (vm *VM) boot(ctx context.Context, qemuBin string, l launch) error {
	logf, err := os.OpenFile(vm.qemuLog, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	_ = os.Remove(l.qmp)
	if vm.passt != "" {
		net, err := startPasst(ctx, vm.passt, vm.dir, l.sshPort, vm.dns)
		if err != nil {
			return err
		}
		vm.net, l.netSocket = net, net.socket
	}
	cmd := exec.Command(qemuBin, l.argv()...)
	cmd.Env = vm.env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, logf, logf
	// Its own process group, so Close can kill everything qemu started;
	// and killed with us if this process dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	vm.log.Debug("starting qemu", "argv", strings.Join(cmd.Args, " "))
	if err := cmd.Start(); err != nil {
		_ = vm.stopNet()
		return fmt.Errorf("starting %s: %w", qemuBin, err)
	}
	exited := make(chan struct{})
	vm.cmd, vm.exited = cmd, exited
	go func() {
		vm.result = cmd.Wait()
		close(exited)
	}()
	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	q, err := dialQMP(sctx, l.qmp, exited)
	if err == nil {
		vm.qmp = q
		return nil
	}
	_ = vm.kill()
	tail := vm.qemuLogTail()
	if strings.Contains(tail, hostfwdBindFailed) {
		return errPortTaken
	}
	if ctx.Err() != nil {
		return errs.Wrap(errs.KindInterrupted, ctx.Err(), "starting qemu interrupted")
	}
	if tail == "" {
		tail = err.Error()
	}
	return errs.New(errs.KindBuild, "qemu did not start: %s", tail)
}

// SSHAddr is the guest's SSH server as reachable from this host: 127.0.0.1:port.
func (vm *VM) SSHAddr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(vm.port)) }

// Accel is the accelerator the VM runs with.
func (vm *VM) Accel() Accel { return vm.accel }

// PID is the qemu process's ID (also its process group's).
func (vm *VM) PID() int { return vm.cmd.Process.Pid }

// Dir is the VM's private work directory; Close removes it.
func (vm *VM) Dir() string { return vm.dir }

// ConsoleOutput returns the serial console so far (its last 4 MiB). It
// fits provision.ConsoleReader.
func (vm *VM) ConsoleOutput(context.Context) (string, error) {
	data, err := readTail(vm.console, consoleReadLimit)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	return string(data), err
}

// Exited is closed when qemu has exited.
func (vm *VM) Exited() <-chan struct{} { return vm.exited }

// Running reports whether qemu still runs.
func (vm *VM) Running() bool {
	select {
	case <-vm.exited:
		return false
	default:
		return true
	}
}

// Shutdown returns qemu's SHUTDOWN event (who stopped the machine), or nil
// if none was seen.
func (vm *VM) Shutdown() *ShutdownEvent {
	if vm.qmp == nil {
		return nil
	}
	return vm.qmp.lastShutdown()
}

// Powerdown asks the guest to shut down, as a power button press (ACPI).
// It does not wait: see Wait.
func (vm *VM) Powerdown(ctx context.Context) error {
	if !vm.Running() {
		return nil
	}
	_, err := vm.qmp.execute(ctx, "system_powerdown", nil)
	return err
}

// Wait waits for qemu to exit. It returns nil when qemu exited by itself
// with status 0 (the guest powered off), an error with qemu's own last
// messages otherwise, and ctx's error (qemu still running) when ctx ends.
func (vm *VM) Wait(ctx context.Context) error {
	select {
	case <-vm.exited:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	if vm.result == nil {
		return nil
	}
	msg := vm.qemuLogTail()
	if msg == "" {
		return fmt.Errorf("qemu exited: %w", vm.result)
	}
	return fmt.Errorf("qemu exited: %w: %s", vm.result, msg)
}

// Export writes the guest's disk, flattened (no backing file) and
// compressed, as qcow2 at path: to a temporary file beside path first,
// renamed into place only when complete, so a failed or interrupted export
// leaves no file at path (and an existing one untouched). qemu must have
// exited. progress, if not nil, is called with percentages.
func (vm *VM) Export(ctx context.Context, path string, progress func(pct float64)) error {
	if vm.Running() {
		return errs.New(errs.KindInternal, "qemu.Export: the VM is still running")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return errs.Wrap(errs.KindUsage, err, "--output %s", path)
	}
	tmp, err := os.CreateTemp(filepath.Dir(abs), "."+filepath.Base(abs)+".tmp-*")
	if err != nil {
		return errs.Wrap(errs.KindUsage, err, "--output %s: cannot write beside it", path)
	}
	tmpName := tmp.Name()
	_ = tmp.Close()
	done := false
	defer func() {
		if !done {
			_ = os.Remove(tmpName)
		}
	}()
	if err := convert(ctx, vm.env, vm.qemuImg, exportArgs(vm.overlay, tmpName), progress); err != nil {
		if ctx.Err() != nil {
			return errs.Wrap(errs.KindInterrupted, err, "exporting the image interrupted")
		}
		return errs.Wrap(errs.KindBuild, err, "exporting the image to %s", path)
	}
	if err := publishFile(tmpName, abs); err != nil {
		return errs.Wrap(errs.KindBuild, err, "writing %s", path)
	}
	done = true
	return nil
}

// Close kills qemu (its whole process group) if it still runs, and removes
// the VM's work directory with every temporary file in it. The console log
// survives only if Spec.ConsoleLog put it elsewhere. Safe to call twice.
func (vm *VM) Close() error {
	vm.closeOnce.Do(func() {
		var errList []error
		if err := vm.kill(); err != nil {
			errList = append(errList, err)
		}
		if vm.qmp != nil {
			_ = vm.qmp.close()
		}
		if err := os.RemoveAll(vm.dir); err != nil {
			errList = append(errList, fmt.Errorf("removing the VM's files: %w", err))
		}
		vm.closeErr = errors.Join(errList...)
	})
	return vm.closeErr
}

// stopNet stops passt, if it runs.
func (vm *VM) stopNet() error {
	err := vm.net.stop()
	vm.net = nil
	return err
}

// kill sends SIGKILL to qemu's process group and waits for the reaping,
// then stops passt.
func (vm *VM) kill() error {
	err := vm.killQEMU()
	return errors.Join(err, vm.stopNet())
}

func (vm *VM) killQEMU() error {
	if vm.cmd == nil || vm.cmd.Process == nil {
		return nil
	}
	if vm.Running() {
		_ = killGroup(vm.cmd.Process.Pid)
	}
	select {
	case <-vm.exited:
	case <-time.After(killWait):
		return fmt.Errorf("qemu (pid %d) did not exit after SIGKILL", vm.cmd.Process.Pid)
	}
	// The group may hold helpers that outlived qemu itself.
	_ = killGroup(vm.cmd.Process.Pid)
	return nil
}

// killGroup sends SIGKILL to the process group pgid; a group that is gone
// already is not an error.
func killGroup(pgid int) error {
	if pgid <= 0 {
		return nil
	}
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

func (vm *VM) qemuLogTail() string {
	data, _ := readTail(vm.qemuLog, qemuLogTail)
	return strings.Join(strings.Fields(strings.ReplaceAll(string(data), "\n", " ; ")), " ")
}

// readTail returns the last n bytes of the file at path.
func readTail(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if off := fi.Size() - n; off > 0 {
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return nil, err
		}
	}
	return io.ReadAll(io.LimitReader(f, n))
}

// findTool returns the program to run: explicit if set, else name on PATH.
func findTool(explicit, name, pkg string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", errs.Usage("%s is not installed (Debian/Ubuntu package %s): the local builder needs it", name, pkg)
	}
	return p, nil
}
