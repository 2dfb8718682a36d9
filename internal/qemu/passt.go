package qemu

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// A guest that is not isolated gets its network from passt, not from qemu's
// slirp: slirp maps its gateway (10.0.2.2) to this host's 127.0.0.1, so the
// guest could reach every service listening on loopback (the serve API, a
// Docker socket proxy, a database). passt runs with --no-map-gw: the guest
// reaches what this host reaches outward, never the host's loopback. The
// SSH forward (127.0.0.1:port -> guest 22) is passt's --tcp-ports.
//
// passt runs in the foreground as a child of this process, in its own
// process group, killed with us (parent-death signal), and with --one-off:
// it quits when qemu, its one client, closes the socket. Its socket and log
// live in the VM's private directory.

const (
	passtSocketName = "passt.sock"
	passtLogName    = "passt.log" // passt's own log file (--log-file)
	passtOutName    = "passt.out" // what passt prints before its log is open
	procNetUnix     = "/proc/net/unix"
	passtBindFailed = "Failed to bind any port"
	procNetTCP      = "/proc/net/tcp"
	// systemd-resolved's list of the upstream servers its stub on
	// 127.0.0.53 uses.
	resolvedResolvConf = "/run/systemd/resolve/resolv.conf"
	hostResolvConf     = "/etc/resolv.conf"
	passtStartTimeout  = 10 * time.Second // passt is up in milliseconds
)

// passtArgs returns passt's arguments (without the program). dns, when not
// empty, replaces the resolvers passt would read from /etc/resolv.conf.
func passtArgs(dir string, sshPort, uid, gid int, dns []string) []string {
	args := []string{
		"--foreground", "--one-off",
		// As root passt would switch to nobody, who cannot enter the VM's
		// private directory: it stays this process's user (and sandboxes
		// itself as usual).
		"--runas", fmt.Sprintf("%d:%d", uid, gid),
		"--socket", filepath.Join(dir, passtSocketName),
		"--log-file", filepath.Join(dir, passtLogName),
		"--no-map-gw",
		"--tcp-ports", fmt.Sprintf("127.0.0.1/%d:22", sshPort),
		"--udp-ports", "none",
	}
	for _, d := range dns {
		args = append(args, "--dns", d)
	}
	return args
}

// guestDNS decides the resolvers passt tells the guest about. passt reads
// /etc/resolv.conf itself, but with --no-map-gw it drops a resolver on
// loopback (systemd-resolved's 127.0.0.53 stub) and the guest would get
// none: then the stub's own upstream servers are used. nil means passt's
// default (a resolver off loopback exists, or none is known at all).
func guestDNS(read func(string) ([]byte, error)) []string {
	data, err := read(hostResolvConf)
	if err != nil {
		return nil
	}
	all := nameservers(data)
	for _, a := range all {
		if !a.IsLoopback() {
			return nil
		}
	}
	if len(all) == 0 {
		return nil
	}
	up, err := read(resolvedResolvConf)
	if err != nil {
		return nil
	}
	var out []string
	for _, a := range nameservers(up) {
		if !a.IsLoopback() && !a.IsUnspecified() {
			out = append(out, a.String())
		}
	}
	return out
}

// nameservers returns the addresses of resolv.conf's nameserver lines (a
// zone, "fe80::1%eth0", is dropped with its address: passt takes none).
func nameservers(data []byte) []netip.Addr {
	var out []netip.Addr
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil || a.Zone() != "" {
			continue
		}
		out = append(out, a.Unmap())
	}
	return out
}

// passtNet is a running passt.
type passtNet struct {
	cmd    *exec.Cmd
	dir    string
	socket string
	exited chan struct{}
}

// startPasst starts passt for a guest whose SSH forward is sshPort and
// returns once its socket listens and the forward is bound. On error no
// passt is left; errPortTaken means the forward's port was taken.
func startPasst(ctx context.Context, bin, dir string, sshPort int, dns []string) (_ *passtNet, err error) {
	out, err := os.OpenFile(filepath.Join(dir, passtOutName), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	p := &passtNet{dir: dir, socket: filepath.Join(dir, passtSocketName), exited: make(chan struct{})}
	_ = os.Remove(p.socket)
	_ = os.Remove(filepath.Join(dir, passtLogName))
	cmd := exec.Command(bin, passtArgs(dir, sshPort, os.Getuid(), os.Getgid(), dns)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, out, out
	cmd.Env = []string{} // passt needs nothing from our environment
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	p.cmd = cmd
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	defer func() {
		if err != nil {
			_ = p.stop()
		}
	}()
	sctx, cancel := context.WithTimeout(ctx, passtStartTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !unixListening(procNetUnix, p.socket) {
		select {
		case <-p.exited:
			tail := p.logTail()
			if strings.Contains(tail, passtBindFailed) {
				return nil, errPortTaken
			}
			return nil, errs.New(errs.KindBuild, "passt did not start: %s", tail)
		case <-sctx.Done():
			if ctx.Err() != nil {
				return nil, errs.Wrap(errs.KindInterrupted, ctx.Err(), "starting passt interrupted")
			}
			// passt reports a socket it could not bind as bound: AppArmor's
			// profile for passt (Ubuntu) lets it write only under /tmp and $HOME.
			return nil, errs.New(errs.KindBuild, "passt did not listen on %s within %s (with AppArmor, passt may write only under /tmp and $HOME: put --output there): %s",
				p.socket, passtStartTimeout, p.logTail())
		case <-tick.C:
		}
	}
	// passt binds the forward before its socket and exits when it can bind
	// no port of it (above). A guard all the same: the forward must listen
	// now, on a socket of passt's when its descriptors can be read (root
	// can; passt makes itself not dumpable).
	inodes := tcpListenInodes(procNetTCP, sshPort)
	if len(inodes) == 0 {
		return nil, errPortTaken
	}
	if owns, known := holdsSocket(filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "fd"), inodes); known && !owns {
		return nil, errPortTaken
	}
	return p, nil
}

// stop kills passt's process group and waits for the reaping.
func (p *passtNet) stop() error {
	if p == nil || p.cmd == nil || p.cmd.Process == nil {
		return nil
	}
	_ = killGroup(p.cmd.Process.Pid)
	select {
	case <-p.exited:
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("passt (pid %d) did not exit after SIGKILL", p.cmd.Process.Pid)
	}
}

func (p *passtNet) logTail() string {
	var parts []string
	for _, name := range []string{passtOutName, passtLogName} {
		data, _ := readTail(filepath.Join(p.dir, name), qemuLogTail)
		if s := strings.Join(strings.Fields(strings.ReplaceAll(string(data), "\n", " ; ")), " "); s != "" {
			parts = append(parts, s)
		}
	}
	if len(parts) == 0 {
		return "passt exited without a message"
	}
	return strings.Join(parts, " ; ")
}

// unixListening reports whether a listening unix socket is bound at path,
// from /proc/net/unix: connecting to find out would use up passt's one
// client (--one-off).
func unixListening(procFile, path string) bool {
	data, err := os.ReadFile(procFile)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		// Num RefCount Protocol Flags Type St Inode Path
		if len(f) < 8 || f[7] != path {
			continue
		}
		flags, err := strconv.ParseUint(f[3], 16, 32)
		if err == nil && flags&0x10000 != 0 { // __SO_ACCEPTCON: listening
			return true
		}
	}
	return false
}

// tcpListenInodes returns the inodes of the sockets that listen on
// 127.0.0.1:port, from /proc/net/tcp.
func tcpListenInodes(procFile string, port int) []string {
	data, err := os.ReadFile(procFile)
	if err != nil {
		return nil
	}
	want := fmt.Sprintf("0100007F:%04X", port)
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		if len(f) > 9 && f[1] == want && f[3] == "0A" { // TCP_LISTEN
			out = append(out, f[9])
		}
	}
	return out
}

// holdsSocket reports whether one of the descriptors in fdDir (a
// /proc/PID/fd) is a socket with one of the inodes; known is false when
// the directory cannot be read.
func holdsSocket(fdDir string, inodes []string) (owns, known bool) {
	entries, err := os.ReadDir(fdDir)
	if err != nil {
		return false, false
	}
	for _, e := range entries {
		link, err := os.Readlink(filepath.Join(fdDir, e.Name()))
		if err != nil {
			continue
		}
		for _, ino := range inodes {
			if link == "socket:["+ino+"]" {
				return true, true
			}
		}
	}
	return false, true
}

// findPasst returns the passt program: explicit if set, else passt on PATH.
func findPasst(explicit string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	p, err := exec.LookPath("passt")
	if err != nil {
		return "", errs.Usage("passt is not installed (Debian/Ubuntu package passt): the local builder's guest network needs it; install it, or build with --isolated")
	}
	return p, nil
}
