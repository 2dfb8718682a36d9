package testenv

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// SSHD is where the jump host's sshd is (Debian's openssh-server).
const SSHD = "/usr/sbin/sshd"

// JumpHost is a real OpenSSH sshd on its own loopback address and port,
// standing in for a bastion: its own host key, one authorized key (the
// test's client key, KeyFile), TCP forwarding allowed and nothing else (no
// PAM, no passwords, no sessions, no agent forwarding). Its log (LogFile,
// LogLevel DEBUG1) shows each connection and each forwarded channel. It
// stops at the test's end.
type JumpHost struct {
	Addr           string // 127.x.y.z:port
	User           string // the user sshd lets in (this process's user)
	HostKey        ssh.Signer
	KeyFile        string // the client's private key (0600), authorized on the jump host
	KnownHostsFile string // a known_hosts file listing HostKey for Addr
	LogFile        string
}

// Jump is the --ssh-jump value: User@Addr.
func (j *JumpHost) Jump() string { return j.User + "@" + j.Addr }

// Log is what sshd logged so far.
func (j *JumpHost) Log() string {
	data, _ := os.ReadFile(j.LogFile)
	return string(data)
}

// ForwardedTo reports whether an sshd log shows a channel forwarded to addr
// (host:port): sshd's "server_request_direct_tcpip: originator ..., target
// HOST port PORT" line of a direct-tcpip open.
func ForwardedTo(log, addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	want := "target " + host + " port " + port
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		if line := sc.Text(); strings.Contains(line, "server_request_direct_tcpip") && strings.HasSuffix(line, want) {
			return true
		}
	}
	return false
}

// StartJumpHost starts a JumpHost. Without sshd the test is skipped, or
// fails with GRIB_IT=1 (CI installs openssh-server).
func StartJumpHost(t testing.TB) *JumpHost {
	t.Helper()
	if _, err := os.Stat(SSHD); err != nil {
		if !Enabled() {
			t.Skipf("no %s (apt-get install openssh-server), and GRIB_IT is not 1", SSHD)
		}
		t.Fatalf("the jump host needs OpenSSH's sshd (apt-get install openssh-server): %v", err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	// sshd insists on its privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatalf("sshd's /run/sshd: %v", err)
	}
	dir := t.TempDir()
	j := &JumpHost{User: u.Username, KeyFile: filepath.Join(dir, "client_ed25519"),
		KnownHostsFile: filepath.Join(dir, "known_hosts"), LogFile: filepath.Join(dir, "sshd.log")}

	hostKey, hostPEM := NewEd25519(t, "jump-host")
	j.HostKey = hostKey
	client, clientPEM := NewEd25519(t, "jump-client")
	hostKeyFile := filepath.Join(dir, "host_ed25519")
	authorized := filepath.Join(dir, "authorized_keys")
	for _, f := range []struct {
		path string
		data []byte
	}{
		{hostKeyFile, hostPEM},
		{j.KeyFile, clientPEM},
		{authorized, ssh.MarshalAuthorizedKey(client.PublicKey())},
	} {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	j.Addr = freeLoopbackAddr(t)
	if err := os.WriteFile(j.KnownHostsFile, []byte(KnownHostsLine(j.Addr, hostKey.PublicKey())), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(conf, []byte(sshdConfig(j.Addr, hostKeyFile, authorized, j.User)), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, SSHD, "-D", "-f", conf, "-E", j.LogFile)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting sshd: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel()
		<-done
		// sshd's per-connection children are in its process group.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	})
	if err := waitBanner(j.Addr, done, 10*time.Second); err != nil {
		t.Fatalf("sshd on %s: %v\n--- sshd log\n%s", j.Addr, err, j.Log())
	}
	return j
}

// KnownHostsLine is the known_hosts line of key for addr (host:port).
func KnownHostsLine(addr string, key ssh.PublicKey) string {
	host, port, _ := net.SplitHostPort(addr)
	name := host
	if port != "22" {
		name = "[" + host + "]:" + port
	}
	return name + " " + string(ssh.MarshalAuthorizedKey(key))
}

func sshdConfig(addr, hostKey, authorized, user string) string {
	return strings.Join([]string{
		"ListenAddress " + addr,
		"HostKey " + hostKey,
		"AuthorizedKeysFile " + authorized,
		"AllowUsers " + user,
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PermitRootLogin prohibit-password",
		"UsePAM no",
		"StrictModes no", // the test's files live in a temporary directory
		"AllowTcpForwarding yes",
		"AllowAgentForwarding no",
		"AllowStreamLocalForwarding no",
		"X11Forwarding no",
		"PermitTTY no",
		"PermitUserEnvironment no",
		"ForceCommand /bin/false", // forwarding only: no session runs anything
		"PidFile none",
		"LogLevel DEBUG1", // DEBUG1 names each direct-tcpip channel's target
		"MaxStartups 100",
		"",
	}, "\n")
}

// NewEd25519 returns a new key and its OpenSSH private key file content.
func NewEd25519(t testing.TB, comment string) (ssh.Signer, []byte) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return signer, pem.EncodeToMemory(block)
}

// freeLoopbackAddr picks a random 127.x.y.z address and a free port on it.
func freeLoopbackAddr(t testing.TB) string {
	t.Helper()
	for range 20 {
		var b [3]byte
		if _, err := rand.Read(b[:]); err != nil {
			t.Fatal(err)
		}
		n, _ := rand.Int(rand.Reader, big.NewInt(200))
		ip := fmt.Sprintf("127.%d.%d.%d", 20+n.Int64()%200, b[1], 1+int(b[2])%250)
		l, err := net.Listen("tcp", ip+":0")
		if err != nil {
			continue
		}
		addr := l.Addr().String()
		_ = l.Close()
		return addr
	}
	t.Fatal("no free loopback address for the jump host")
	return ""
}

// waitBanner waits until addr answers with an SSH banner, or sshd exits.
func waitBanner(addr string, exited <-chan error, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("sshd exited: %v", err)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 4)
			_, rerr := c.Read(buf)
			_ = c.Close()
			if rerr == nil && string(buf) == "SSH-" {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("no SSH banner within " + limit.String())
}

// EstablishedTo counts this host's established TCP connections whose
// remote end is addr (an IPv4 host:port), from /proc/net/tcp: what a
// test checks to see that no connection to the jump host was left open.
func EstablishedTo(addr string) (int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	ip := net.ParseIP(host).To4()
	p, err := strconv.Atoi(port)
	if ip == nil || err != nil {
		return 0, fmt.Errorf("%s: not an IPv4 host:port", addr)
	}
	// /proc/net/tcp writes the address as the little-endian 32-bit word.
	want := strings.ToUpper(hex.EncodeToString([]byte{ip[3], ip[2], ip[1], ip[0]})) + ":" + fmt.Sprintf("%04X", p)
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && f[2] == want && f[3] == "01" { // rem_address, st ESTABLISHED
			n++
		}
	}
	return n, nil
}
