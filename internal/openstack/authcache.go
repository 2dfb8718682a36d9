package openstack

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
)

// DefaultAuthCacheTTL is how long an AuthCache reuses one authentication.
// Keystone tokens last an hour by default; a shorter-lived token is renewed
// by gophercloud's reauthentication (AllowReauth) when the cloud refuses it.
const DefaultAuthCacheTTL = 10 * time.Minute

// AuthCache lets connections to one cloud with the same settings share one
// authentication (its Keystone token and catalog) for TTL. A matrix whose
// cells each connect to the build and upload clouds then authenticates
// once per cloud, not once per connection: Keystone hashes the password on
// every authentication (bcrypt, about half a CPU-second each on the test
// machine), and real clouds rate-limit it. Connections made at once wait
// for the first one's authentication. A failed authentication is not kept.
// A changed clouds.yaml entry (credentials, auth URL, region, TLS
// settings) is a new key; a changed CA file's contents is seen after TTL.
//
// Its zero value is ready (TTL DefaultAuthCacheTTL). It is safe for
// concurrent use and must not be copied once used.
type AuthCache struct {
	TTL time.Duration
	Now func() time.Time // nil: time.Now

	mu    sync.Mutex
	slots map[[sha256.Size]byte]*authSlot
}

type authSlot struct {
	ready    chan struct{} // closed when provider/err are set
	provider *gophercloud.ProviderClient
	err      error
	at       time.Time
}

func (a *AuthCache) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *AuthCache) ttl() time.Duration {
	if a.TTL > 0 {
		return a.TTL
	}
	return DefaultAuthCacheTTL
}

// provider returns the cached authenticated provider for key, or runs auth
// (once, however many callers ask at the same time) and caches its result.
func (a *AuthCache) provider(ctx context.Context, key [sha256.Size]byte, auth func() (*gophercloud.ProviderClient, error)) (*gophercloud.ProviderClient, error) {
	a.mu.Lock()
	if a.slots == nil {
		a.slots = map[[sha256.Size]byte]*authSlot{}
	}
	s := a.slots[key]
	if s != nil {
		select {
		case <-s.ready:
			if s.err != nil || a.now().Sub(s.at) >= a.ttl() {
				s = nil
			}
		default: // being authenticated: wait for it below
		}
	}
	if s == nil {
		s = &authSlot{ready: make(chan struct{})}
		a.slots[key] = s
		a.mu.Unlock()
		s.provider, s.err = auth()
		s.at = a.now()
		close(s.ready)
		return s.provider, s.err
	}
	a.mu.Unlock()
	select {
	case <-s.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if s.err != nil {
		// The first caller's failure may be its own (its context ended):
		// authenticate for this caller, uncached.
		return auth()
	}
	return s.provider, nil
}

// authKey identifies what an authentication depends on: the clouds.yaml
// entry's settings (the password among them, hashed) and scope, which the
// caller sets for what the options cannot show (the proxy).
func authKey(cfg *CloudConfig, o *connectOptions) [sha256.Size]byte {
	ao := cfg.AuthOptions
	scope := gophercloud.AuthScope{}
	if ao.Scope != nil {
		scope = *ao.Scope
	}
	ao.Scope = nil
	tlsSet, insecure := cfg.TLS != nil, cfg.TLS != nil && cfg.TLS.InsecureSkipVerify
	return sha256.Sum256(fmt.Appendf(nil, "%q\x00%q\x00%#v\x00%#v\x00%#v\x00%q\x00%q\x00%v %v\x00%q\x00%v\x00%q\x00%p",
		cfg.Name, cfg.Path, ao, scope, cfg.Endpoint, cfg.AuthType, cfg.TLSUnverified, tlsSet, insecure,
		o.authURL, o.endpoints, o.authScope, o.httpClient))
}
