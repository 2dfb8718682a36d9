package openstack

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Connections through one AuthCache authenticate once per cloud and
// settings: at once or one after another, until TTL; changed credentials,
// a failure or an expired entry authenticate again.
func TestAuthCacheSharesOneAuthentication(t *testing.T) {
	f := newFakeCloud(t)
	now := time.Date(2026, 12, 3, 14, 0, 0, 0, time.UTC)
	cache := &AuthCache{TTL: time.Minute, Now: func() time.Time { return now }}
	connect := func(cfg *CloudConfig) (*Cloud, error) {
		return ConnectConfig(context.Background(), cfg, WithAuthCache(cache, "proxy-a"))
	}

	var wg sync.WaitGroup
	clouds := make([]*Cloud, 4)
	for i := range clouds {
		wg.Go(func() {
			c, err := connect(f.cfg)
			if err != nil {
				t.Error(err)
			}
			clouds[i] = c
		})
	}
	wg.Wait()
	if got := f.auths.Load(); got != 1 {
		t.Fatalf("four connections at once authenticated %d times, want 1", got)
	}
	for _, c := range clouds {
		if c == nil || c.ProjectID() != "proj-1" {
			t.Fatalf("a shared connection lost its project: %+v", c)
		}
	}
	if _, err := connect(f.cfg); err != nil || f.auths.Load() != 1 {
		t.Errorf("a later connection: %v, %d authentications; want the cached one", err, f.auths.Load())
	}

	other := *f.cfg
	other.AuthOptions.Username = "someone-else"
	if _, err := connect(&other); err != nil || f.auths.Load() != 2 {
		t.Errorf("other credentials: %v, %d authentications; want a new one", err, f.auths.Load())
	}
	if _, err := ConnectConfig(context.Background(), f.cfg, WithAuthCache(cache, "proxy-b")); err != nil || f.auths.Load() != 3 {
		t.Errorf("another proxy: %v, %d authentications; want a new one", err, f.auths.Load())
	}

	now = now.Add(time.Minute)
	if _, err := connect(f.cfg); err != nil || f.auths.Load() != 4 {
		t.Errorf("after TTL: %v, %d authentications; want a new one", err, f.auths.Load())
	}

	// A refused authentication is not kept.
	bad := *f.cfg
	bad.AuthOptions.Password = "wrong"
	for i := range 2 {
		if _, err := connect(&bad); err == nil {
			t.Fatalf("attempt %d with a wrong password connected", i)
		}
	}
	if got := f.auths.Load(); got != 6 {
		t.Errorf("two refused attempts made %d authentications in all, want 6 (none cached)", got)
	}
}
