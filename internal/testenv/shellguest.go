package testenv

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// ShellGuest is an in-process SSH server on loopback standing in for a
// booted guest, for tests that run the real guest steps without booting
// one: it runs each command with /bin/sh in its sandbox directory Dir (the
// test process plays root: "sudo -n " is dropped), with Dir/run standing
// in for /run, Dir/cloud-init-output.log for /var/log/cloud-init-output.log,
// Dir/etc/runner-image for /etc/runner-image (the image's manifest),
// Dir/machine-id for /etc/machine-id, Dir/root-authorized_keys for root's
// authorized_keys, and a cloud-init on PATH that reports "done" (and does
// nothing else). A dpkg-query on PATH prints the file Dir/dpkg-query.out,
// which a test may write (none: no package). A command that would power
// off (systemctl poweroff, shutdown) is never run: the guest records it in
// Dir/powered-off and drops the connection, as a guest shutting down does.
// Its console is the file Dir/console, which a test's script may write to.
// It accepts any client key; check its HostKey (or skip the check). It
// stops at the test's end.
type ShellGuest struct {
	Addr    string
	Dir     string
	HostKey ssh.Signer
}

// StartShellGuest starts a ShellGuest.
func StartShellGuest(t testing.TB) *ShellGuest {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"run", "bin"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	fake := "#!/bin/sh\necho '{\"status\": \"done\", \"extended_status\": \"done\", \"errors\": []}'\n"
	if err := os.WriteFile(filepath.Join(dir, "bin", "cloud-init"), []byte(fake), 0o700); err != nil {
		t.Fatal(err)
	}
	dpkg := "#!/bin/sh\ncat " + filepath.Join(dir, "dpkg-query.out") + " 2>/dev/null || :\n"
	if err := os.WriteFile(filepath.Join(dir, "bin", "dpkg-query"), []byte(dpkg), 0o700); err != nil {
		t.Fatal(err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) { return nil, nil }}
	cfg.AddHostKey(hostKey)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &ShellGuest{Addr: l.Addr().String(), Dir: dir, HostKey: hostKey}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { g.serve(c, cfg) })
		}
	})
	return g
}

// Console returns what the guest's console shows: the file Dir/console.
func (g *ShellGuest) Console() string {
	data, _ := os.ReadFile(filepath.Join(g.Dir, "console"))
	return string(data)
}

func (g *ShellGuest) serve(c net.Conn, cfg *ssh.ServerConfig) {
	defer c.Close()
	sc, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	var wg sync.WaitGroup
	defer wg.Wait()
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "sessions only")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			return
		}
		wg.Go(func() { g.session(ch, creqs) })
	}
}

func (g *ShellGuest) session(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	for req := range reqs {
		if req.Type != "exec" {
			_ = req.Reply(false, nil)
			continue
		}
		var p struct{ Cmd string }
		if err := ssh.Unmarshal(req.Payload, &p); err != nil {
			_ = req.Reply(false, nil)
			return
		}
		_ = req.Reply(true, nil)
		code := g.run(p.Cmd, ch)
		if code < 0 {
			return // closed without an exit status
		}
		_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(code)}))
		return
	}
}

// run runs one command line in the sandbox and returns its exit status.
func (g *ShellGuest) run(cmdline string, ch ssh.Channel) int {
	run := filepath.Join(g.Dir, "run")
	cmdline = strings.TrimPrefix(cmdline, "sudo -n ")
	if strings.Contains(cmdline, "poweroff") || strings.Contains(cmdline, "shutdown") || strings.Contains(cmdline, "reboot") {
		// Never on the host: this process may well be root.
		_ = os.WriteFile(filepath.Join(g.Dir, "powered-off"), []byte(cmdline+"\n"), 0o600)
		return -1 // no exit status: the connection dropped
	}
	cmdline = strings.NewReplacer(
		"'/run'", "'"+run+"'",
		"'/run/", "'"+run+"/",
		"/var/log/cloud-init-output.log", filepath.Join(g.Dir, "cloud-init-output.log"),
		"/etc/runner-image/", filepath.Join(g.Dir, "etc", "runner-image")+"/",
		"/etc/machine-id", filepath.Join(g.Dir, "machine-id"),
		"'/root/.ssh/authorized_keys'", "'"+filepath.Join(g.Dir, "root-authorized_keys")+"'",
	).Replace(cmdline)
	cmd := exec.Command("/bin/sh", "-c", cmdline)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = time.Second
	cmd.Dir = g.Dir
	cmd.Env = []string{"PATH=" + filepath.Join(g.Dir, "bin") + ":" + os.Getenv("PATH")}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = ch, ch, ch.Stderr()
	var out bytes.Buffer
	if strings.Contains(cmdline, run) {
		cmd.Stdout = &out // it may print a path under Dir/run: the guest's /run
	}
	err := cmd.Run()
	if out.Len() > 0 {
		_, _ = ch.Write(bytes.ReplaceAll(out.Bytes(), []byte(run), []byte("/run")))
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.ExitCode()
	default:
		_, _ = fmt.Fprintln(ch.Stderr(), err)
		return 126
	}
}
