package qemu

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

func TestPasstArgs(t *testing.T) {
	args := passtArgs("/w", 12345, 1000, 1001, []string{"192.0.2.53", "2001:db8::53"})
	joined := " " + strings.Join(args, " ") + " "
	for _, want := range []string{
		" --no-map-gw ",                    // the guest never reaches the host's loopback
		" --tcp-ports 127.0.0.1/12345:22 ", // the SSH forward, on loopback only
		" --udp-ports none ",               // no UDP twin of the forward
		" --foreground ", " --one-off ",    // our child, gone with qemu
		" --socket /w/passt.sock ",  // in the VM's private directory
		" --log-file /w/passt.log ", // ditto
		" --runas 1000:1001 ",       // stays our user: it can enter that directory
		" --dns 192.0.2.53 --dns 2001:db8::53 ",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("passt args lack %q: %s", want, joined)
		}
	}
	if n := strings.Count(joined, " --tcp-ports "); n != 1 {
		t.Errorf("%d TCP forwards, want only SSH: %s", n, joined)
	}
	if got := strings.Join(passtArgs("/w", 1, 0, 0, nil), " "); strings.Contains(got, "--dns") {
		t.Errorf("no DNS given, yet: %s", got)
	}
}

func TestGuestDNS(t *testing.T) {
	tests := []struct {
		name     string
		etc, run string // "" is a missing file
		want     []string
	}{
		{"resolver off loopback: passt's default", "nameserver 10.255.255.53\n", "", nil},
		{"one of several off loopback", "nameserver 127.0.0.53\nnameserver 192.0.2.53\n", "nameserver 198.51.100.1\n", nil},
		{"systemd-resolved stub", "# stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch example.internal\n",
			"nameserver 192.0.2.53\nnameserver 2001:db8::53\nnameserver 127.0.0.1\nnameserver fe80::1%eth0\n",
			[]string{"192.0.2.53", "2001:db8::53"}},
		{"stub without upstream file", "nameserver 127.0.0.53\n", "", nil},
		{"ipv6 loopback stub", "nameserver ::1\n", "nameserver ::ffff:192.0.2.7\n", []string{"192.0.2.7"}},
		{"no resolv.conf", "", "nameserver 192.0.2.53\n", nil},
		{"no nameserver lines", "search x\n", "nameserver 192.0.2.53\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string]string{hostResolvConf: tt.etc, resolvedResolvConf: tt.run}
			got := guestDNS(func(p string) ([]byte, error) {
				if files[p] == "" {
					return nil, os.ErrNotExist
				}
				return []byte(files[p]), nil
			})
			if !slices.Equal(got, tt.want) {
				t.Errorf("guestDNS = %q, want %q", got, tt.want)
			}
		})
	}
}

// FuzzNameservers: whatever the file, each address returned is a valid
// address without a zone, written on a nameserver line of the input.
func FuzzNameservers(f *testing.F) {
	for _, s := range []string{"nameserver 127.0.0.53\n", "nameserver 2001:db8::1\nnameserver fe80::1%eth0\n",
		"nameserver\n", "nameserver ::ffff:1.2.3.4 x\n", "#nameserver 1.2.3.4\n nameserver 5.6.7.8"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, a := range nameservers(data) {
			if !a.IsValid() || a.Zone() != "" || a.Is4In6() {
				t.Fatalf("address %v (valid %v, zone %q)", a, a.IsValid(), a.Zone())
			}
			found := false
			for _, line := range strings.Split(string(data), "\n") {
				fl := strings.Fields(line)
				if len(fl) >= 2 && fl[0] == "nameserver" {
					if b, err := netip.ParseAddr(fl[1]); err == nil && b.Unmap() == a {
						found = true
					}
				}
			}
			if !found {
				t.Fatalf("address %v is on no nameserver line of %q", a, data)
			}
		}
	})
}

func TestProcListening(t *testing.T) {
	dir := t.TempDir()
	unix := filepath.Join(dir, "unix")
	os.WriteFile(unix, []byte(`Num       RefCount Protocol Flags    Type St Inode Path
00000000cf99a52e: 00000002 00000000 00010000 0001 01 61032 /w/passt.sock
00000000cf99a52f: 00000002 00000000 00000000 0001 03 61033 /w/other.sock
`), 0o600)
	tcp := filepath.Join(dir, "tcp")
	os.WriteFile(tcp, []byte(`  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:3039 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:3040 0100007F:3039 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 00000000:3041 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0
`), 0o600)
	for _, tt := range []struct {
		name string
		got  bool
		want bool
	}{
		{"listening socket", unixListening(unix, "/w/passt.sock"), true},
		{"connected, not listening", unixListening(unix, "/w/other.sock"), false},
		{"absent", unixListening(unix, "/w/none.sock"), false},
		{"no proc file", unixListening(filepath.Join(dir, "nope"), "/w/passt.sock"), false},
		{"loopback listener", slices.Equal(tcpListenInodes(tcp, 0x3039), []string{"1"}), true},
		{"established, not listening", len(tcpListenInodes(tcp, 0x3040)) == 0, true},
		{"listening on 0.0.0.0, not loopback", len(tcpListenInodes(tcp, 0x3041)) == 0, true},
		{"no proc tcp file", len(tcpListenInodes(filepath.Join(dir, "nope"), 0x3039)) == 0, true},
	} {
		if tt.got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestHoldsSocket(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	inodes := tcpListenInodes(procNetTCP, l.Addr().(*net.TCPAddr).Port)
	if len(inodes) != 1 {
		t.Fatalf("listening inodes of our own listener: %v", inodes)
	}
	self := filepath.Join("/proc", strconv.Itoa(os.Getpid()), "fd")
	if owns, known := holdsSocket(self, inodes); !owns || !known {
		t.Errorf("holdsSocket(ourselves) = %v, %v; want true, true", owns, known)
	}
	if owns, known := holdsSocket(self, []string{"1"}); owns || !known {
		t.Errorf("holdsSocket(another inode) = %v, %v; want false, true", owns, known)
	}
	if _, known := holdsSocket(filepath.Join(t.TempDir(), "none"), inodes); known {
		t.Error("an unreadable fd directory is known")
	}
}

func requirePasst(t *testing.T) string {
	t.Helper()
	requireTools(t, "passt")
	p, _ := exec.LookPath("passt")
	return p
}

// A guest that is not isolated runs with passt: its socket in the VM's
// directory, the SSH forward on 127.0.0.1, qemu on passt's stream; Close
// ends passt too and leaves nothing.
func TestVMWithPasst(t *testing.T) {
	requireX86Qemu(t)
	requirePasst(t)
	base, _ := bootDiskImage(t)
	spec := testSpec(t, base)
	spec.Isolated = false
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vm, err := Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	waitConsole(t, vm, testMarker)
	if vm.net == nil {
		t.Fatal("no passt for a guest that is not isolated")
	}
	passtPID := vm.net.cmd.Process.Pid
	if filepath.Dir(vm.net.socket) != vm.Dir() || !unixListening(procNetUnix, vm.net.socket) {
		t.Errorf("passt's socket %s: not listening in the VM's directory %s", vm.net.socket, vm.Dir())
	}
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(vm.PID()) + "/cmdline")
	if args := strings.ReplaceAll(string(cmdline), "\x00", " "); !strings.Contains(args, "stream,id=net0,server=off,addr.type=unix,addr.path="+vm.net.socket) ||
		strings.Contains(args, "hostfwd") {
		t.Errorf("qemu does not use passt's socket alone: %s", args)
	}
	if host, _, _ := net.SplitHostPort(vm.SSHAddr()); host != "127.0.0.1" {
		t.Errorf("SSH address %s", vm.SSHAddr())
	}
	conn, err := net.DialTimeout("tcp", vm.SSHAddr(), 5*time.Second)
	if err != nil {
		t.Fatalf("passt's SSH forward does not listen: %v", err)
	}
	conn.Close()
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	if !processGone(passtPID) {
		t.Errorf("passt (pid %d) survived Close", passtPID)
	}
	assertEmptyDir(t, spec.TempDir)
}

// passt exits when it cannot bind the forward: startPasst reports the port
// as taken (Start then tries another), leaving no passt.
func TestStartPasstPortTaken(t *testing.T) {
	bin := requirePasst(t)
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	dir := t.TempDir()
	p, err := startPasst(context.Background(), bin, dir, port, nil)
	if !errors.Is(err, errPortTaken) {
		if p != nil {
			_ = p.stop()
		}
		t.Fatalf("startPasst on a taken port = %v, want errPortTaken", err)
	}

	// A listener without SO_REUSEADDR (Go's sets it): taken all the same.
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 1); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	p, err = startPasst(context.Background(), bin, t.TempDir(), sa.(*syscall.SockaddrInet4).Port, nil)
	if !errors.Is(err, errPortTaken) {
		if p != nil {
			_ = p.stop()
		}
		t.Fatalf("startPasst on a port taken without SO_REUSEADDR = %v, want errPortTaken", err)
	}
}

func TestStartWithoutPasst(t *testing.T) {
	requireX86Qemu(t)
	base, _ := bootDiskImage(t)
	spec := testSpec(t, base)
	spec.Isolated = false
	spec.QEMU, _ = exec.LookPath("qemu-system-x86_64")
	spec.QEMUImg, _ = exec.LookPath("qemu-img")
	t.Setenv("PATH", t.TempDir())
	_, err := Start(context.Background(), spec)
	if err == nil || errs.ExitCode(err) != 2 || !strings.Contains(err.Error(), "passt is not installed") ||
		!strings.Contains(err.Error(), "install it, or build with --isolated") {
		t.Fatalf("Start without passt = %v, want a usage error saying to install passt", err)
	}
	assertEmptyDir(t, spec.TempDir)
}

// passt failing at start is a build error quoting it; Ctrl-C while it
// starts is an interruption; either way no passt is left.
func TestStartPasstFailures(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	tests := []struct {
		name   string
		script string
		cancel bool
		kind   errs.Kind
		want   string
	}{
		{"exits", `echo "passt: something is broken" >&2; exit 1`, false, errs.KindBuild, "something is broken"},
		{"interrupted", `echo $$ > '` + pidFile + `'; exec sleep 300`, true, errs.KindInterrupted, "interrupted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bin := fakeQemu(t, tt.script)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancel {
				go func() {
					for {
						if data, _ := os.ReadFile(pidFile); len(data) > 0 {
							cancel()
							return
						}
						time.Sleep(20 * time.Millisecond)
					}
				}()
			}
			p, err := startPasst(ctx, bin, t.TempDir(), 12345, nil)
			if p != nil || !errs.Is(err, tt.kind) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("startPasst = %v, %v; want a %v error with %q", p, err, tt.kind, tt.want)
			}
			if tt.cancel {
				data, _ := os.ReadFile(pidFile)
				pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
				if !processGone(pid) {
					t.Errorf("passt (pid %d) survived", pid)
				}
			}
		})
	}
}
