package openstack

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"
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

// maxNotice is how late any wait may notice a state change.
const maxNotice = 2 * time.Second

// TestWaitsNoticeChangeWithin2s drives every OpenStack wait against a fake
// cloud whose state changes at a virtual instant, and checks the wait returns
// at most 2 s (virtual) after it, and never pauses longer than 2 s.
func TestWaitsNoticeChangeWithin2s(t *testing.T) {
	// before/after are the answers before and after the change.
	type answer struct {
		code   int
		status string
	}
	waits := []struct {
		name          string
		path          string
		before, after answer
		body          func(status string) any
		wait          func(ctx context.Context, c *Cloud) error
	}{
		{name: "server active", path: "GET /compute/v2.1/servers/s1",
			before: answer{200, "BUILD"}, after: answer{200, "ACTIVE"},
			body: func(s string) any { return serverJSON("s1", s, "") },
			wait: func(ctx context.Context, c *Cloud) error {
				_, err := c.WaitServer(ctx, "s1", StatusActive)
				return err
			}},
		{name: "server shutoff", path: "GET /compute/v2.1/servers/s1",
			before: answer{200, "ACTIVE"}, after: answer{200, "SHUTOFF"},
			body: func(s string) any { return serverJSON("s1", s, "") },
			wait: func(ctx context.Context, c *Cloud) error {
				_, err := c.WaitServer(ctx, "s1", StatusShutoff)
				return err
			}},
		{name: "server deleted", path: "GET /compute/v2.1/servers/s1",
			before: answer{200, "ACTIVE"}, after: answer{404, ""},
			body: func(s string) any { return serverJSON("s1", s, "") },
			wait: func(ctx context.Context, c *Cloud) error {
				_, err := c.WaitServer(ctx, "s1", StatusDeleted)
				return err
			}},
		{name: "server error", path: "GET /compute/v2.1/servers/s1",
			before: answer{200, "BUILD"}, after: answer{200, "ERROR"},
			body: func(s string) any { return serverJSON("s1", s, "boom") },
			wait: func(ctx context.Context, c *Cloud) error {
				_, err := c.WaitServer(ctx, "s1", StatusActive)
				if err == nil {
					t.Error("a server in ERROR ended the wait without an error")
				}
				return nil
			}},
		{name: "image active", path: "GET /image/v2/images/i1",
			before: answer{200, "saving"}, after: answer{200, "active"},
			body: func(s string) any { return imageJSON("i1", "img", s, "2026-01-01T00:00:00Z") },
			wait: func(ctx context.Context, c *Cloud) error {
				_, err := c.WaitImageActive(ctx, "i1")
				return err
			}},
	}
	changes := []time.Duration{0, 50 * time.Millisecond, 999 * time.Millisecond, 7300 * time.Millisecond, 61 * time.Second, 20 * time.Minute}
	for _, w := range waits {
		for _, at := range changes {
			t.Run(w.name+"/"+at.String(), func(t *testing.T) {
				f := newFakeCloud(t)
				clock := &fakeClock{}
				f.mux.HandleFunc(w.path, func(rw http.ResponseWriter, r *http.Request) {
					a := w.before
					if clock.elapsed() >= at {
						a = w.after
					}
					if a.code != http.StatusOK {
						http.Error(rw, `{"itemNotFound": {"message": "x"}}`, a.code)
						return
					}
					serveJSON(rw, http.StatusOK, w.body(a.status))
				})
				c := f.connect(t)
				c.sleep = clock.sleep
				if err := w.wait(t.Context(), c); err != nil {
					t.Fatal(err)
				}
				if late := clock.elapsed() - at; late > maxNotice {
					t.Errorf("state changed at %v, noticed at %v: %v late, want at most %v", at, clock.elapsed(), late, maxNotice)
				}
				for i, p := range clock.pauses {
					if p <= 0 || p > maxNotice {
						t.Fatalf("pause %d is %v, want in (0, %v]", i, p, maxNotice)
					}
				}
			})
		}
	}
}

// TestPollEndsWithContextUnderFakeClock checks a cancelled wait stops at the
// next pause rather than polling on.
func TestPollEndsWithContextUnderFakeClock(t *testing.T) {
	clock := &fakeClock{}
	c := &Cloud{sleep: clock.sleep}
	ctx, cancel := context.WithCancel(t.Context())
	checks := 0
	err := c.poll(ctx, func(context.Context) (bool, error) {
		checks++
		if checks == 3 {
			cancel()
		}
		return false, nil
	})
	if err == nil || checks != 3 {
		t.Fatalf("poll = %v after %d checks; want the context's error after 3", err, checks)
	}
}
