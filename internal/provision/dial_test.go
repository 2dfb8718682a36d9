package provision

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"golang.org/x/crypto/ssh"
)

func echoGuest(t *testing.T) *fakeGuest {
	return startFakeGuest(t, scripted(t, map[string]answer{"echo hello": {stdout: "hello\n"}}))
}

// hello runs a command over g to prove the connection works.
func hello(t *testing.T, g *Guest) {
	t.Helper()
	out, _, err := g.output(context.Background(), "echo hello", nil)
	if err != nil || string(out) != "hello\n" {
		t.Fatalf("echo over the connection: %q, %v", out, err)
	}
}

func TestDialRetriesUntilSSHDAnswers(t *testing.T) {
	f := echoGuest(t)
	f.setDropFirst(3) // slirp accepts and resets while sshd is not up
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g, err := Dial(ctx, f.target(KnownHostKeys(ssh.FingerprintSHA256(f.hostKey.PublicKey()))))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	hello(t, g)
	if n := f.connectionCount(); n != 4 {
		t.Errorf("%d connections, want 3 dropped + 1", n)
	}
}

func TestDialHostKeyPolicies(t *testing.T) {
	tests := []struct {
		name      string
		policy    func(f *fakeGuest, reads *atomic.Int32) HostKeyPolicy
		wantErr   bool
		wantKind  errs.Kind
		wantIs    error
		wantInMsg []string
		wantConns int // connections the guest saw; -1: do not check
	}{
		{
			name: "console fingerprints match after a few reads",
			policy: func(f *fakeGuest, reads *atomic.Int32) HostKeyPolicy {
				return ConsoleHostKeys(func(context.Context) (string, error) {
					if reads.Add(1) < 3 {
						return "[    1.0] booting\n", nil // cloud-init has not printed them yet
					}
					return f.console(), nil
				})
			},
			wantConns: 1,
		},
		{
			name: "mismatch is a security error and never retried",
			policy: func(f *fakeGuest, reads *atomic.Int32) HostKeyPolicy {
				other := ssh.FingerprintSHA256(newSigner(t).PublicKey())
				return ConsoleHostKeys(func(context.Context) (string, error) {
					return strings.ReplaceAll(f.console(), ssh.FingerprintSHA256(f.hostKey.PublicKey()), other), nil
				})
			},
			wantErr:   true,
			wantKind:  errs.KindBuild,
			wantIs:    ErrHostKeyMismatch,
			wantInMsg: []string{"intercepting", "not among the fingerprints"},
			wantConns: 1,
		},
		{
			name: "no console output fails closed without connecting",
			policy: func(f *fakeGuest, reads *atomic.Int32) HostKeyPolicy {
				return ConsoleHostKeys(func(context.Context) (string, error) { reads.Add(1); return "", nil })
			},
			wantErr:   true,
			wantKind:  errs.KindBuild,
			wantIs:    ErrNoHostKeys,
			wantInMsg: []string{"fail closed", "console output is empty", "insecure"},
			wantConns: 0,
		},
		{
			name: "console that cannot be read fails closed",
			policy: func(f *fakeGuest, reads *atomic.Int32) HostKeyPolicy {
				return ConsoleHostKeys(func(context.Context) (string, error) { return "", errors.New("nova said 409") })
			},
			wantErr:   true,
			wantKind:  errs.KindBuild,
			wantInMsg: []string{"nova said 409"},
			wantConns: 0,
		},
		{
			name: "known fingerprint",
			policy: func(f *fakeGuest, _ *atomic.Int32) HostKeyPolicy {
				return KnownHostKeys(ssh.FingerprintSHA256(f.hostKey.PublicKey()))
			},
			wantConns: 1,
		},
		{
			name: "the build's pinned key",
			policy: func(f *fakeGuest, _ *atomic.Int32) HostKeyPolicy {
				return PinnedHostKey(f.hostKey.PublicKey())
			},
			wantConns: 1,
		},
		{
			name: "another key than the pinned one is refused at once",
			policy: func(*fakeGuest, *atomic.Int32) HostKeyPolicy {
				return PinnedHostKey(newSigner(t).PublicKey())
			},
			wantErr:   true,
			wantKind:  errs.KindBuild,
			wantIs:    ErrHostKeyMismatch,
			wantInMsg: []string{"intercepting", "this build generated", "user-data"},
			wantConns: 1,
		},
		{
			name:      "insecure policy accepts any key",
			policy:    func(*fakeGuest, *atomic.Int32) HostKeyPolicy { return InsecureAcceptAnyHostKey() },
			wantConns: 1,
		},
		{
			name:      "no policy is refused at once",
			policy:    func(*fakeGuest, *atomic.Int32) HostKeyPolicy { return HostKeyPolicy{} },
			wantErr:   true,
			wantKind:  errs.KindInternal,
			wantInMsg: []string{"no SSH host key policy"},
			wantConns: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := echoGuest(t)
			var reads atomic.Int32
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			if !tt.wantErr {
				cancel()
				ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
			}
			defer cancel()
			g, err := Dial(ctx, f.target(tt.policy(f, &reads)))
			if !tt.wantErr {
				if err != nil {
					t.Fatal(err)
				}
				defer g.Close()
				hello(t, g)
			} else {
				if err == nil {
					g.Close()
					t.Fatal("Dial succeeded, want an error")
				}
				if k := errs.KindOf(err); k != tt.wantKind {
					t.Errorf("kind %v, want %v (%v)", k, tt.wantKind, err)
				}
				if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
					t.Errorf("error %v is not %v", err, tt.wantIs)
				}
				for _, s := range tt.wantInMsg {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not mention %q", err, s)
					}
				}
			}
			if n := f.connectionCount(); tt.wantConns >= 0 && n != tt.wantConns {
				t.Errorf("guest saw %d connections, want %d", n, tt.wantConns)
			}
		})
	}
}

func TestDialDeadlineNamesAddressAndLastError(t *testing.T) {
	// A port that was just free: nothing listens, so every dial is refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = Dial(ctx, Target{Addr: addr, User: "ubuntu", Signer: newSigner(t),
		HostKeys: InsecureAcceptAnyHostKey(), RetryInterval: 5 * time.Millisecond})
	if !errs.Is(err, errs.KindBuild) {
		t.Fatalf("got %v, want a build error", err)
	}
	for _, want := range []string{addr, "connection refused", "SSH deadline"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestDialCancelIsInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Dial(ctx, Target{Addr: "127.0.0.1:1", User: "ubuntu", Signer: newSigner(t),
		HostKeys: ConsoleHostKeys(func(context.Context) (string, error) { return "", nil })})
	if k := errs.KindOf(err); k != errs.KindInterrupted {
		t.Fatalf("kind %v (%v), want interrupted", k, err)
	}
}

func TestDialWrongKeyIsRetriedThenReported(t *testing.T) {
	f := echoGuest(t)
	tg := f.target(InsecureAcceptAnyHostKey())
	tg.Signer = newSigner(t) // not authorised on the guest
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := Dial(ctx, tg)
	if !errs.Is(err, errs.KindBuild) || !strings.Contains(err.Error(), "unable to authenticate") {
		t.Fatalf("got %v, want a build error naming the authentication failure", err)
	}
	if n := f.connectionCount(); n < 2 {
		t.Errorf("%d connections, want retries", n)
	}
}
