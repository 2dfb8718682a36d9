package openstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/runner-image-builder/github-runner-image-builder/internal/clock"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// StatusCode returns the HTTP status of an OpenStack API error, or 0 when err
// carries none (a transport error, or nil).
func StatusCode(err error) int {
	var e gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &e) {
		return e.Actual
	}
	return 0
}

// IsNotFound reports whether err is an HTTP 404 from an OpenStack API.
func IsNotFound(err error) bool { return StatusCode(err) == http.StatusNotFound }

// IsConflict reports whether err is an HTTP 409 from an OpenStack API.
func IsConflict(err error) bool { return StatusCode(err) == http.StatusConflict }

// IsTransient reports whether an idempotent call that failed with err may
// succeed if simply repeated: a 5xx other than 501 (not implemented never
// heals), a connection reset or cut, or a network timeout. A 4xx, a refused
// connection (the service is down, not busy) and a cancelled ctx are not.
// A request that timed out (ResponseTimeout) is, although net/http makes
// its error match context.DeadlineExceeded too.
func IsTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || isContextDeadline(err) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	if code := StatusCode(err); code != 0 {
		return code >= 500 && code != http.StatusNotImplemented
	}
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, net.ErrClosed) { // the server answered and hung up mid-upload
		return true
	}
	return false
}

// isContextDeadline reports whether err's chain holds a context's own
// deadline error (not a request timeout that merely matches it).
func isContextDeadline(err error) bool {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if e == context.DeadlineExceeded { // identity, not errors.Is: that is the point
			return true
		}
	}
	return false
}

// isUnreachable reports whether err says the endpoint could not be reached at
// all: connection refused, no route, DNS failure, or a network timeout.
func isUnreachable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.ECONNRESET) {
		return true
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// classify gives an API error its kind: unreachable, auth (401/403) or not
// found (404); anything else is returned as is (the caller knows the phase).
// what names the call for the message, e.g. `get server 1234`.
func classify(err error, what string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: %w", what, err)
	case isUnreachable(err) && StatusCode(err) == 0:
		return errs.Wrap(errs.KindUnreachable, err, "%s: cloud unreachable", what)
	}
	switch StatusCode(err) {
	case http.StatusUnauthorized, http.StatusForbidden:
		return errs.Wrap(errs.KindAuth, err, "%s: refused by the cloud (check the project's roles)", what)
	case http.StatusNotFound:
		return errs.Wrap(errs.KindNotFound, err, "%s: not found", what)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Retry calls fn until it succeeds, fails with an error that is not
// IsTransient, fails 5 times, or ctx ends. Backoff starts at 250 ms, doubles
// and is capped at 4 s, with jitter. Use it only for idempotent calls (GET,
// list, delete); never to repeat a create.
func Retry(ctx context.Context, log *slog.Logger, what string, fn func(context.Context) error) error {
	const attempts = 5
	delay := 250 * time.Millisecond
	for i := 1; ; i++ {
		err := fn(ctx)
		if err == nil || !IsTransient(err) || i == attempts {
			return err
		}
		wait := delay/2 + rand.N(delay/2+1)
		if log != nil {
			log.Debug("transient OpenStack error; retrying", "call", what, "attempt", i, "wait", wait, "err", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), err)
		case <-t.C:
		}
		delay = min(2*delay, 4*time.Second)
	}
}

// pollIntervals is the polling schedule of every wait: it starts at half a
// second and is capped at 2 s. A poll is not free for the cloud: Nova answers
// each GET of a server with two Neutron lists (its ports and security
// groups), so polls were the largest part of the API load a build itself
// makes (bench/README.md, Parallel matrix); a state change is still noticed
// within 2 s.
const (
	pollFirst = 500 * time.Millisecond
	pollMax   = 2 * time.Second
)

// poll calls check until it reports done or an error, or ctx ends; the
// interval grows from pollFirst by half each time, capped at pollMax.
func (c *Cloud) poll(ctx context.Context, check func(context.Context) (bool, error)) error {
	pause := c.sleep
	if pause == nil {
		pause = clock.Sleep
	}
	interval := pollFirst
	for {
		done, err := check(ctx)
		if err != nil || done {
			return err
		}
		if err := pause(ctx, interval); err != nil {
			return err
		}
		interval = min(interval*3/2, pollMax)
	}
}
