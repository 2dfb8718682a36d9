package provision

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// fakeGuest is an in-process SSH server standing in for a builder guest. It
// records every exec request (command line, stdin, env requests) and answers
// through handle, which a test sets: scripted answers, or runShell to run the
// command for real in a sandbox.
type fakeGuest struct {
	t        *testing.T
	addr     string
	hostKey  ssh.Signer
	buildKey ssh.Signer // the builder's key, the only one authorised

	// dropFirst connections are closed before the SSH handshake, as slirp
	// does while the guest's sshd is not up yet.
	dropFirst int

	// handle runs one exec request and returns its exit status.
	handle func(e *execRequest) int

	mu          sync.Mutex
	newHostKey  ssh.Signer // set by replaceHostKey: presented from then on
	connections int
	execs       []execRecord
	envRequests []string
}

type execRecord struct {
	Cmd   string
	Stdin []byte
}

// execRequest is one command the client asked the fake guest to run.
type execRequest struct {
	Ctx    context.Context // ends when the client signals or closes the session
	Cmd    string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Drop closes the whole connection without an exit status, as a guest
	// shutting down does.
	Drop func()
}

func newSigner(t testing.TB) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startFakeGuest listens on loopback; everything stops at the test's end.
func startFakeGuest(t *testing.T, handle func(e *execRequest) int) *fakeGuest {
	t.Helper()
	f := &fakeGuest{t: t, hostKey: newSigner(t), buildKey: newSigner(t), handle: handle}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	var wg sync.WaitGroup
	var connsMu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.connections++
			drop := f.connections <= f.dropFirst
			f.mu.Unlock()
			if drop {
				_ = c.Close()
				continue
			}
			connsMu.Lock()
			conns = append(conns, c)
			connsMu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				f.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		connsMu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		connsMu.Unlock()
		wg.Wait()
	})
	return f
}

func (f *fakeGuest) serve(c net.Conn) {
	defer c.Close()
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(key.Marshal(), f.buildKey.PublicKey().Marshal()) {
				return nil, nil
			}
			return nil, errors.New("unknown key")
		},
	}
	f.mu.Lock()
	hostKey := f.hostKey
	if f.newHostKey != nil {
		hostKey = f.newHostKey
	}
	f.mu.Unlock()
	cfg.AddHostKey(hostKey)
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
			_ = nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, chReqs, err := nc.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.session(ch, chReqs, func() { _ = sc.Close() })
		}()
	}
}

func (f *fakeGuest) session(ch ssh.Channel, reqs <-chan *ssh.Request, drop func()) {
	defer ch.Close()
	// ctx ends when the client signals the command or closes the session.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var finished chan struct{}
	defer func() {
		cancel()
		if finished != nil {
			<-finished
		}
	}()
	for req := range reqs {
		switch req.Type {
		case "env":
			var kv struct{ Name, Value string }
			_ = ssh.Unmarshal(req.Payload, &kv)
			f.mu.Lock()
			f.envRequests = append(f.envRequests, kv.Name+"="+kv.Value)
			f.mu.Unlock()
			_ = req.Reply(false, nil)
		case "signal":
			cancel()
		case "exec":
			var p struct{ Command string }
			if err := ssh.Unmarshal(req.Payload, &p); err != nil || finished != nil {
				_ = req.Reply(false, nil)
				continue
			}
			_ = req.Reply(true, nil)
			finished = make(chan struct{})
			go func() {
				defer close(finished)
				f.exec(ctx, ch, p.Command, drop)
			}()
		default:
			if req.WantReply {
				_ = req.Reply(false, nil)
			}
		}
	}
}

// exec runs one command through handle and reports its exit status.
func (f *fakeGuest) exec(ctx context.Context, ch ssh.Channel, cmd string, drop func()) {
	var stdin bytes.Buffer
	dropped := false
	e := &execRequest{Ctx: ctx, Cmd: cmd, Stdin: io.TeeReader(ch, &stdin), Stdout: ch, Stderr: ch.Stderr(),
		Drop: func() { dropped = true; drop() }}
	f.mu.Lock()
	handle := f.handle
	f.mu.Unlock()
	code := handle(e)
	if !dropped && ctx.Err() == nil {
		_, _ = io.Copy(&stdin, ch) // whatever the handler did not read
	}
	f.mu.Lock()
	f.execs = append(f.execs, execRecord{Cmd: cmd, Stdin: stdin.Bytes()})
	f.mu.Unlock()
	if dropped {
		return
	}
	_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(code)}))
	_ = ch.Close()
}

// setHandler replaces how the guest answers commands.
func (f *fakeGuest) setHandler(handle func(e *execRequest) int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.handle = handle
}

// replaceHostKey makes the guest present another host key to new
// connections, as a machine in the middle would.
func (f *fakeGuest) replaceHostKey(s ssh.Signer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.newHostKey = s
}

// setDropFirst makes the guest close its first n connections at once.
func (f *fakeGuest) setDropFirst(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dropFirst = n
}

func (f *fakeGuest) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var cmds []string
	for _, e := range f.execs {
		cmds = append(cmds, e.Cmd)
	}
	return cmds
}

func (f *fakeGuest) envs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.envRequests...)
}

func (f *fakeGuest) records() []execRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]execRecord(nil), f.execs...)
}

func (f *fakeGuest) connectionCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.connections
}

// console renders the host key block as cloud-init prints it on the console.
func (f *fakeGuest) console() string {
	return fmt.Sprintf("[   12.345678] cloud-init[601]: Cloud-init v. 24.4 running 'modules:final'\n"+
		"<14>Nov 23 07:49:04 ec2: \n"+
		"<14>Nov 23 07:49:04 ec2: #############################################################\n"+
		"<14>Nov 23 07:49:04 ec2: %s\n"+
		"<14>Nov 23 07:49:04 ec2: 256 %s root@fake (ED25519)\n"+
		"<14>Nov 23 07:49:04 ec2: %s\n", fingerprintsBegin, ssh.FingerprintSHA256(f.hostKey.PublicKey()), fingerprintsEnd)
}

// target is a Target for the fake guest with fast retries.
func (f *fakeGuest) target(policy HostKeyPolicy) Target {
	return Target{Addr: f.addr, User: "ubuntu", Signer: f.buildKey, HostKeys: policy,
		RetryInterval: 5 * time.Millisecond, AttemptTimeout: 5 * time.Second}
}

// dial connects to the fake guest, failing the test on error.
func (f *fakeGuest) dial(t *testing.T) *Guest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g, err := Dial(ctx, f.target(KnownHostKeys(ssh.FingerprintSHA256(f.hostKey.PublicKey()))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	return g
}

// scripted answers commands from a table: exact command line → answer.
// Unknown commands exit 127 and are reported as test errors.
type answer struct {
	stdout, stderr string
	code           int
}

func scripted(t *testing.T, table map[string]answer) func(e *execRequest) int {
	return func(e *execRequest) int {
		a, ok := table[e.Cmd]
		if !ok {
			t.Errorf("fake guest: unexpected command %q", e.Cmd)
			return 127
		}
		_, _ = io.WriteString(e.Stdout, a.stdout)
		_, _ = io.WriteString(e.Stderr, a.stderr)
		return a.code
	}
}

// runShell runs each command for real with /bin/sh in dir, as sshd would
// run it through the user's shell; "sudo -n " is dropped (the test process
// plays root). The environment holds only PATH, so nothing leaks in.
func runShell(dir string) func(e *execRequest) int {
	return func(e *execRequest) int {
		cmdline := strings.TrimPrefix(e.Cmd, "sudo -n ")
		cmd := exec.CommandContext(e.Ctx, "/bin/sh", "-c", cmdline)
		// Kill the whole process group, as sshd's session ending would.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = time.Second
		cmd.Dir = dir
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = e.Stdin, e.Stdout, e.Stderr
		err := cmd.Run()
		var exit *exec.ExitError
		switch {
		case err == nil:
			return 0
		case errors.As(err, &exit):
			return exit.ExitCode()
		default:
			_, _ = fmt.Fprintln(e.Stderr, err)
			return 126
		}
	}
}

// The checks on what the guest receives are only worth something if the
// fake really records it.
func TestFakeGuestRecordsWhatItReceives(t *testing.T) {
	f := startFakeGuest(t, runShell(t.TempDir()))
	g := f.dial(t)
	sess, err := g.current().client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	_ = sess.Setenv("LEAK", "value") // rejected, but seen
	sess.Stdin = strings.NewReader("on stdin")
	if err := sess.Run("cat >/dev/null; echo ok"); err != nil {
		t.Fatal(err)
	}
	if got := f.envs(); len(got) != 1 || got[0] != "LEAK=value" {
		t.Errorf("env requests %q", got)
	}
	if r := f.records(); len(r) != 1 || r[0].Cmd != "cat >/dev/null; echo ok" || string(r[0].Stdin) != "on stdin" {
		t.Errorf("records %+v", r)
	}
}
