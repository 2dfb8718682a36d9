package provision

import (
	"context"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// fakeClock is a virtual clock: sleep advances it at once and records each
// pause, so a wait's schedule is checked without waiting for real.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Duration
	pauses []time.Duration
}

func (c *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now += d
	c.pauses = append(c.pauses, d)
	return nil
}

func (c *fakeClock) elapsed() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// check fails the test when the change at at was noticed more than 2 s late
// or any pause was longer than 2 s.
func (c *fakeClock) check(t *testing.T, at time.Duration) {
	t.Helper()
	const maxNotice = 2 * time.Second
	if late := c.elapsed() - at; late > maxNotice {
		t.Errorf("state changed at %v, noticed at %v: %v late, want at most %v", at, c.elapsed(), late, maxNotice)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, p := range c.pauses {
		if p <= 0 || p > maxNotice {
			t.Fatalf("pause %d is %v, want in (0, %v]", i, p, maxNotice)
		}
	}
}

var waitChanges = []time.Duration{0, 300 * time.Millisecond, 7300 * time.Millisecond, 61 * time.Second, 4 * time.Minute}

// TestWaitCloudInitNoticesDoneWithin2s: cloud-init finishes at a virtual
// instant; WaitCloudInit returns at most 2 s after it, whatever the first
// interval asked for.
func TestWaitCloudInitNoticesDoneWithin2s(t *testing.T) {
	running := readCloudInit(t, "status-running.json")
	done := readCloudInit(t, "status-done.json")
	for _, first := range []time.Duration{0, 5 * time.Millisecond, 10 * time.Second} {
		for _, at := range waitChanges {
			t.Run(first.String()+"/"+at.String(), func(t *testing.T) {
				clock := &fakeClock{}
				f := startFakeGuest(t, func(e *execRequest) int {
					if e.Cmd != cloudInitStatusCmd {
						t.Errorf("unexpected command %q", e.Cmd)
						return 127
					}
					if clock.elapsed() >= at {
						_, _ = e.Stdout.Write(done)
					} else {
						_, _ = e.Stdout.Write(running)
					}
					return 0
				})
				tg := f.target(KnownHostKeys(ssh.FingerprintSHA256(f.hostKey.PublicKey())))
				tg.RetryInterval = first
				tg.sleep = clock.sleep
				ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
				defer cancel()
				g, err := Dial(ctx, tg)
				if err != nil {
					t.Fatal(err)
				}
				defer g.Close()
				st, err := g.WaitCloudInit(ctx)
				if err != nil || st.State != StateDone {
					t.Fatalf("got %q, %v; want done", st.State, err)
				}
				clock.check(t, at)
			})
		}
	}
}

// TestDialNoticesConsoleKeysWithin2s: the host key fingerprints appear on
// the console at a virtual instant; Dial connects at most 2 s after it.
func TestDialNoticesConsoleKeysWithin2s(t *testing.T) {
	for _, at := range waitChanges {
		t.Run(at.String(), func(t *testing.T) {
			f := echoGuest(t)
			clock := &fakeClock{}
			tg := f.target(ConsoleHostKeys(func(context.Context) (string, error) {
				if clock.elapsed() >= at {
					return f.console(), nil
				}
				return "[    1.0] booting\n", nil
			}))
			tg.RetryInterval = 0 // the default schedule
			tg.sleep = clock.sleep
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			g, err := Dial(ctx, tg)
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			clock.check(t, at)
		})
	}
}
