package provision

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/runner-image-builder/github-runner-image-builder/internal/clock"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// Defaults for Target's retry knobs.
const (
	defaultRetryInterval  = 250 * time.Millisecond
	maxRetryInterval      = 2 * time.Second
	defaultAttemptTimeout = 15 * time.Second
)

// Target says where a guest's sshd is and how to authenticate both ways.
type Target struct {
	Addr     string        // host:port of the guest's sshd
	User     string        // the login user (a sudoer without password, e.g. "ubuntu")
	Signer   ssh.Signer    // the builder's private key
	HostKeys HostKeyPolicy // which host keys to accept
	Logger   *slog.Logger  // nil: discard
	Jump     *Jump         // the jump host the guest is reached through (jump.go); nil: direct
	// Secrets are masked (Redact) in everything the Guest passes on from
	// the guest, whichever command printed it: script and verify output,
	// check output, log tails, cloud-init's messages. They are not sent.
	Secrets map[string]string

	// RetryInterval is the first pause between connection attempts and
	// between cloud-init status reads; it doubles up to 2 s. Zero: 250 ms.
	RetryInterval time.Duration
	// AttemptTimeout bounds one TCP dial plus SSH handshake. Zero means 15 s.
	AttemptTimeout time.Duration

	// sleep pauses between attempts and status reads; nil is a real timer.
	// Tests inject a fake clock here to check how soon a wait notices a change.
	sleep func(ctx context.Context, d time.Duration) error
}

// retryInterval is the first pause, never above the 2 s cap of every wait.
func (t Target) retryInterval() time.Duration {
	if t.RetryInterval <= 0 {
		return defaultRetryInterval
	}
	return min(t.RetryInterval, maxRetryInterval)
}

func (t Target) sleeper() func(context.Context, time.Duration) error {
	if t.sleep == nil {
		return clock.Sleep
	}
	return t.sleep
}

func (t Target) logger() *slog.Logger {
	if t.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return t.Logger
}

// Dial connects to the guest, retrying any dial or handshake error (sshd not
// up yet, slirp resetting connections, timeouts, the key not installed yet)
// with a short backoff until ctx ends. With the console policy it first polls
// the console until cloud-init printed the host key fingerprints. A host key
// that does not match fails at once and is never retried.
//
// Errors: KindBuild on mismatch or when ctx's deadline passes (naming the
// address and the last error), KindInterrupted when ctx is cancelled.
func Dial(ctx context.Context, t Target) (*Guest, error) {
	if t.Addr == "" || t.User == "" || t.Signer == nil {
		return nil, errs.New(errs.KindInternal, "provision.Dial needs an address, a user and a signer")
	}
	log := t.logger().With("addr", t.Addr, "host_key_policy", t.HostKeys.String())
	delay := t.retryInterval()
	var keys *acceptedKeys
	var lastErr error
	for attempt := 1; ; attempt++ {
		if keys == nil {
			k, err := t.HostKeys.resolve(ctx)
			switch {
			case err == nil:
				keys = k
				log.Debug("host keys known", "fingerprints", k.fingerprints())
			case errors.Is(err, ErrNoHostKeys) || t.HostKeys.console != nil:
				lastErr = err // keep polling the console
			default:
				return nil, errs.Wrap(errs.KindInternal, err, "SSH to %s", t.Addr)
			}
		}
		if keys != nil {
			client, hostKey, err := dialOnce(ctx, t, keys)
			if err == nil {
				log.Debug("SSH connected", "attempts", attempt, "host_key", ssh.FingerprintSHA256(hostKey))
				return newGuest(client, hostKey, t, log), nil
			}
			if errors.Is(err, ErrHostKeyMismatch) {
				return nil, errs.Wrap(errs.KindBuild, err, "SSH to %s", t.Addr)
			}
			if jerr := JumpError(err, t.Addr); jerr != nil {
				return nil, jerr
			}
			if ctx.Err() == nil { // keep the real cause, not the deadline that cut the attempt
				lastErr = err
			}
			log.Debug("SSH attempt failed", "attempt", attempt, "err", err)
		}
		if err := t.sleeper()(ctx, delay); err != nil {
			return nil, dialGaveUp(ctx, t, lastErr)
		}
		delay = min(2*delay, maxRetryInterval)
	}
}

func dialGaveUp(ctx context.Context, t Target, lastErr error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return errs.Wrap(errs.KindInterrupted, context.Cause(ctx), "SSH to %s interrupted", t.Addr)
	}
	if errors.Is(lastErr, ErrNoHostKeys) {
		return errs.Wrap(errs.KindBuild, lastErr,
			"no SSH host key fingerprints from cloud-init on the console of %s before the SSH deadline, so the guest "+
				"cannot be trusted (fail closed); check the console, raise the SSH timeout, or accept any host key "+
				"with the insecure option if the network path is trusted", t.Addr)
	}
	if lastErr == nil {
		lastErr = context.Cause(ctx)
	}
	return errs.Wrap(errs.KindBuild, lastErr,
		"no SSH connection to %s as %s before the SSH deadline; last error", t.Addr, t.User)
}

// dialOnce makes one TCP connection and SSH handshake, bounded by the
// attempt timeout and by ctx. It returns the host key the guest presented.
func dialOnce(ctx context.Context, t Target, keys *acceptedKeys) (*ssh.Client, ssh.PublicKey, error) {
	timeout := t.AttemptTimeout
	if timeout <= 0 {
		timeout = defaultAttemptTimeout
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := DialTCP(actx, t.Jump, t.Addr)
	if err != nil {
		return nil, nil, err
	}
	// Closing the connection is the only way to abort a handshake in progress.
	stop := context.AfterFunc(actx, func() { _ = conn.Close() })
	var presented ssh.PublicKey
	cfg := &ssh.ClientConfig{
		User: t.User,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(t.Signer)},
		HostKeyCallback: func(hostname string, _ net.Addr, key ssh.PublicKey) error {
			if err := keys.check(hostname, key); err != nil {
				return err
			}
			presented = key
			return nil
		},
		HostKeyAlgorithms: keys.algos,
		Timeout:           timeout,
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, t.Addr, cfg)
	if !stop() {
		// The attempt's context ended during the handshake and closed conn.
		if err == nil {
			_ = c.Close()
		}
		return nil, nil, fmt.Errorf("SSH handshake with %s: %w", t.Addr, context.Cause(actx))
	}
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	return ssh.NewClient(c, chans, reqs), presented, nil
}
