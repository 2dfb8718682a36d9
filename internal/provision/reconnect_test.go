package provision

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/faultproxy"
	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// logRecorder keeps what a Guest logs, to count its warnings.
type logRecorder struct{ testenv.LockedBuffer }

func (l *logRecorder) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (l *logRecorder) count(s string) int { return strings.Count(l.String(), s) }

// viaProxy puts a TCP fault proxy in front of the fake guest.
func viaProxy(t *testing.T, f *fakeGuest) *faultproxy.TCP {
	t.Helper()
	p, err := faultproxy.NewTCP(f.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// dialVia dials the fake guest through p with policy, logging to log.
func dialVia(t *testing.T, f *fakeGuest, p *faultproxy.TCP, policy HostKeyPolicy, log *logRecorder) *Guest {
	t.Helper()
	tg := f.target(policy)
	tg.Addr = p.Addr()
	tg.Logger = log.logger()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g, err := Dial(ctx, tg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	return g
}

func knownKey(f *fakeGuest) HostKeyPolicy {
	return KnownHostKeys(ssh.FingerprintSHA256(f.hostKey.PublicKey()))
}

// counter is a count shared with a fake guest's handler.
type counter struct {
	mu sync.Mutex
	n  int
}

func (c *counter) inc() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return c.n
}

func (c *counter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// The connection goes away while cloud-init runs: the wait redials, with
// the host key of the first dial and without reading the console again,
// and ends with cloud-init's status.
func TestWaitCloudInitReconnectsAfterALostConnection(t *testing.T) {
	running := readCloudInit(t, "status-running.json")
	done := readCloudInit(t, "status-done.json")
	tests := []struct {
		name string
		lose func(p *faultproxy.TCP, e *execRequest)
	}{
		{"connection reset", func(p *faultproxy.TCP, _ *execRequest) { p.ResetAll() }},
		{"guest drops the connection", func(_ *faultproxy.TCP, e *execRequest) { e.Drop() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var reads counter
			proxy := make(chan *faultproxy.TCP, 1)
			f := startFakeGuest(t, func(e *execRequest) int {
				if e.Cmd != cloudInitStatusCmd {
					t.Errorf("unexpected command %q", e.Cmd)
					return 127
				}
				switch n := reads.inc(); {
				case n == 2:
					p := <-proxy
					proxy <- p
					tt.lose(p, e)
				case n < 4:
					_, _ = e.Stdout.Write(running)
				default:
					_, _ = e.Stdout.Write(done)
				}
				return 0
			})
			p := viaProxy(t, f)
			proxy <- p
			var consoleReads counter
			policy := ConsoleHostKeys(func(context.Context) (string, error) {
				consoleReads.inc()
				return f.console(), nil
			})
			log := &logRecorder{}
			g := dialVia(t, f, p, policy, log)
			readsAtDial := consoleReads.get()

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			st, err := g.WaitCloudInit(ctx)
			if err != nil || st.State != StateDone {
				t.Fatalf("got %q, %v; want done", st.State, err)
			}
			if reads.get() != 4 {
				t.Errorf("status read %d times, want 4 (the lost one included)", reads.get())
			}
			if f.connectionCount() != 2 || p.Accepted() != 2 {
				t.Errorf("%d connections reached the guest (%d the proxy), want 2: the dial and one redial", f.connectionCount(), p.Accepted())
			}
			if consoleReads.get() != readsAtDial {
				t.Errorf("the console was read %d more times on redial, want none (the first key is pinned)", consoleReads.get()-readsAtDial)
			}
			if n := log.count("level=WARN"); n != 1 || log.count("reconnecting") != 1 {
				t.Errorf("%d warnings, want one for the reconnect:\n%s", n, log.String())
			}
		})
	}
}

// On redial the guest presents another host key: refused at once, even
// when the policy of the first dial would have accepted it.
func TestReconnectRefusesAnotherHostKey(t *testing.T) {
	running := readCloudInit(t, "status-running.json")
	for _, tt := range []struct {
		name   string
		policy func(f *fakeGuest, other ssh.Signer) HostKeyPolicy
	}{
		{"known keys naming both", func(f *fakeGuest, other ssh.Signer) HostKeyPolicy {
			return KnownHostKeys(ssh.FingerprintSHA256(f.hostKey.PublicKey()), ssh.FingerprintSHA256(other.PublicKey()))
		}},
		{"insecure", func(*fakeGuest, ssh.Signer) HostKeyPolicy { return InsecureAcceptAnyHostKey() }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			other := newSigner(t)
			var reads counter
			var f *fakeGuest
			f = startFakeGuest(t, func(e *execRequest) int {
				if reads.inc() == 2 {
					f.replaceHostKey(other)
					e.Drop()
					return 0
				}
				_, _ = e.Stdout.Write(running)
				return 0
			})
			p := viaProxy(t, f)
			g := dialVia(t, f, p, tt.policy(f, other), &logRecorder{})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := g.WaitCloudInit(ctx)
			if !errs.Is(err, errs.KindBuild) || !errors.Is(err, ErrHostKeyMismatch) {
				t.Fatalf("got %v, want a build error for the host key mismatch", err)
			}
			if !strings.Contains(err.Error(), ssh.FingerprintSHA256(other.PublicKey())) || !strings.Contains(err.Error(), "reconnecting") {
				t.Errorf("error %q does not name the new key and the reconnect", err)
			}
			if f.connectionCount() != 2 {
				t.Errorf("%d connections, want 2: the mismatch is not retried", f.connectionCount())
			}
		})
	}
}

// A status read that gets no answer counts as a lost connection.
func TestWaitCloudInitRedialsAfterAnUnansweredRead(t *testing.T) {
	running := readCloudInit(t, "status-running.json")
	done := readCloudInit(t, "status-done.json")
	var reads counter
	f := startFakeGuest(t, func(e *execRequest) int {
		switch n := reads.inc(); {
		case n == 2:
			<-e.Ctx.Done() // never answers; ends when the client gives up
			return 0
		case n < 3:
			_, _ = e.Stdout.Write(running)
		default:
			_, _ = e.Stdout.Write(done)
		}
		return 0
	})
	p := viaProxy(t, f)
	g := dialVia(t, f, p, knownKey(f), &logRecorder{})
	g.readTimeout = 100 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := g.WaitCloudInit(ctx)
	if err != nil || st.State != StateDone {
		t.Fatalf("got %q, %v; want done", st.State, err)
	}
	if f.connectionCount() != 2 {
		t.Errorf("%d connections, want 2", f.connectionCount())
	}
}

// scriptGuest answers the commands of RunScript, Verify, Clean, PowerOff
// and Tail with success; onRun runs when the pushed script starts.
func scriptGuest(t *testing.T, onRun func(e *execRequest) int) *fakeGuest {
	return startFakeGuest(t, func(e *execRequest) int {
		switch {
		case strings.Contains(e.Cmd, "grib-push"):
			_, _ = e.Stdout.Write([]byte("/run/grib.AbCd1234"))
		case strings.Contains(e.Cmd, "grib-run") && onRun != nil:
			return onRun(e)
		case strings.Contains(e.Cmd, "tail -n"):
			_, _ = e.Stdout.Write([]byte("a log line\n"))
		}
		return 0
	})
}

// A connection lost while the script runs ends RunScript with a one-line
// build error; the script is not run again and nothing redials.
func TestRunScriptConnectionLostIsNotRetried(t *testing.T) {
	for _, tt := range []struct {
		name string
		lose func(p *faultproxy.TCP, e *execRequest)
	}{
		{"connection reset", func(p *faultproxy.TCP, _ *execRequest) { p.ResetAll() }},
		{"guest drops the connection", func(_ *faultproxy.TCP, e *execRequest) { e.Drop() }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var runs counter
			proxy := make(chan *faultproxy.TCP, 1)
			f := scriptGuest(t, func(e *execRequest) int {
				runs.inc()
				_, _ = e.Stdout.Write([]byte("script started\n"))
				p := <-proxy
				proxy <- p
				tt.lose(p, e)
				return 0
			})
			p := viaProxy(t, f)
			proxy <- p
			g := dialVia(t, f, p, knownKey(f), &logRecorder{})
			var out strings.Builder
			err := g.RunScript(context.Background(), []byte("#!/bin/sh\necho hi\n"), map[string]string{"S": "v"}, &lockedBuilder{b: &out})
			if !errs.Is(err, errs.KindBuild) {
				t.Fatalf("got %v, want a build error", err)
			}
			msg := err.Error()
			for _, want := range []string{"connection", "lost while the build script ran", "not run again", p.Addr()} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not say %q", msg, want)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error %q is more than one line", msg)
			}
			if runs.get() != 1 {
				t.Errorf("the script ran %d times, want once", runs.get())
			}
			if f.connectionCount() != 1 {
				t.Errorf("%d connections, want 1: nothing redials while or after the script ran", f.connectionCount())
			}
		})
	}
}

type lockedBuilder struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// A connection that stops forwarding while the script runs ends at the
// script's deadline, with the deadline error (not a lost connection).
func TestRunScriptStalledConnectionEndsAtTheDeadline(t *testing.T) {
	proxy := make(chan *faultproxy.TCP, 1)
	f := scriptGuest(t, func(e *execRequest) int {
		p := <-proxy
		proxy <- p
		p.Stall(2 * time.Second) // ends by itself, so the cleanup can run
		<-e.Ctx.Done()
		return 0
	})
	p := viaProxy(t, f)
	proxy <- p
	g := dialVia(t, f, p, knownKey(f), &logRecorder{})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	err := g.RunScript(ctx, []byte("#!/bin/sh\nsleep 600\n"), nil, nil)
	if !errs.Is(err, errs.KindBuild) || !strings.Contains(err.Error(), "deadline") || strings.Contains(err.Error(), "lost") {
		t.Fatalf("got %v, want the deadline's build error", err)
	}
}

// A connection that died between steps is redialled before the next step
// starts, where starting over is safe.
func TestStepsRedialADeadConnectionBeforeStarting(t *testing.T) {
	for _, tt := range []struct {
		name string
		do   func(ctx context.Context, g *Guest) error
	}{
		{"verify", func(ctx context.Context, g *Guest) error {
			return g.Verify(ctx, Checks{List: []Check{{Name: "true", Command: "true"}}})
		}},
		{"clean", func(ctx context.Context, g *Guest) error { return g.Clean(ctx) }},
		{"power-off", func(ctx context.Context, g *Guest) error { return g.PowerOff(ctx) }},
		{"script", func(ctx context.Context, g *Guest) error { return g.RunScript(ctx, []byte("true"), nil, nil) }},
		{"tail", func(ctx context.Context, g *Guest) error {
			if got := g.Tail(ctx, "/var/log/x", 3); got != "a log line" {
				return errors.New("tail read " + got)
			}
			return nil
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := scriptGuest(t, nil)
			p := viaProxy(t, f)
			log := &logRecorder{}
			g := dialVia(t, f, p, knownKey(f), log)
			if p.ResetAll() != 1 {
				t.Fatal("no connection to reset")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := tt.do(ctx, g); err != nil {
				t.Fatal(err)
			}
			if f.connectionCount() != 2 || log.count("reconnecting") != 1 {
				t.Errorf("%d connections and %d reconnect warnings, want 2 and 1", f.connectionCount(), log.count("reconnecting"))
			}
		})
	}
}

// Once Clean removed the builder's key no login can succeed: a lost
// connection then fails at once instead of redialling.
func TestNoRedialAfterTheKeyIsRemoved(t *testing.T) {
	f := scriptGuest(t, nil)
	p := viaProxy(t, f)
	g := dialVia(t, f, p, knownKey(f), &logRecorder{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := g.Clean(ctx); err != nil {
		t.Fatal(err)
	}
	p.ResetAll()
	err := g.PowerOff(ctx)
	if !errs.Is(err, errs.KindBuild) || !errors.Is(err, ErrKeyRemoved) || !strings.Contains(err.Error(), "cannot be reopened") {
		t.Fatalf("got %v, want a build error saying the connection cannot be reopened", err)
	}
	if f.connectionCount() != 1 {
		t.Errorf("%d connections, want 1", f.connectionCount())
	}
}
