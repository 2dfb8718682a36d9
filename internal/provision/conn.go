package provision

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// This file keeps a Guest's SSH connection usable across a lost TCP
// connection where doing the work again is safe: the cloud-init wait and the
// read-only reads redial, and Verify, Clean, PowerOff and RunScript redial
// before they start when the connection is dead. A redial accepts only the
// host key the guest presented at the first dial (no console re-check, no
// trust on first use of a new key). A connection lost while the user's
// script runs is never retried: the script may not be safe to run twice.

// ErrKeyRemoved is in the error of a guest whose connection was lost after
// Clean removed the builder's key: no new login can succeed.
var ErrKeyRemoved = errors.New("the builder's key was removed from the guest")

// probeTimeout bounds the keepalive that tells a live connection from a
// dead one before a step starts.
const probeTimeout = 15 * time.Second

// errUnresponsive marks a read that got no answer within its bound: the
// connection is treated as lost.
var errUnresponsive = errors.New("the guest did not answer over SSH")

// conn is one SSH connection and a channel closed when it ends.
type conn struct {
	client *ssh.Client
	dead   chan struct{}
}

func watchConn(client *ssh.Client) *conn {
	c := &conn{client: client, dead: make(chan struct{})}
	go func() {
		_ = client.Wait() // returns when the connection ends or is closed
		close(c.dead)
	}()
	return c
}

func (c *conn) isDead() bool {
	select {
	case <-c.dead:
		return true
	default:
		return false
	}
}

// newSession opens a session, giving up when ctx ends. The ssh package
// cannot abort an open in progress: on a connection that stopped answering
// it would wait until the connection closes, so it runs aside and a
// session it gets too late is closed.
func (c *conn) newSession(ctx context.Context) (*ssh.Session, error) {
	type result struct {
		s   *ssh.Session
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := c.client.NewSession()
		ch <- result{s, err}
	}()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.s != nil {
				_ = r.s.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// alive asks the guest's sshd for a keepalive answer within probeTimeout.
func (c *conn) alive(ctx context.Context) bool {
	if c.isDead() {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	answered := make(chan error, 1)
	go func() {
		// Any reply (OpenSSH refuses unknown requests) proves the connection.
		_, _, err := c.client.SendRequest("keepalive@openssh.com", true, nil)
		answered <- err
	}()
	select {
	case err := <-answered:
		return err == nil
	case <-ctx.Done():
		return false
	case <-c.dead:
		return false
	}
}

// connectionLost reports whether err is what a command sees when its SSH
// connection went away: EOF, a reset, a closed connection, a channel closed
// without an exit status, or no answer within the read bound.
func connectionLost(err error) bool {
	var missing *ssh.ExitMissingError
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, errUnresponsive) || errors.As(err, &missing)
}

// current is the connection in use; nil after Close.
func (g *Guest) current() *conn {
	g.connMu.Lock()
	defer g.connMu.Unlock()
	return g.cur
}

// lost reports whether err came from a lost connection (c is the one the
// command used).
func (g *Guest) lost(c *conn, err error) bool {
	return err != nil && (connectionLost(err) || (c != nil && c.isDead()))
}

// ensureConnected redials before a step starts when the connection is dead
// or does not answer a keepalive. Steps call it only where starting over
// on a new connection is safe.
func (g *Guest) ensureConnected(ctx context.Context) error {
	c := g.current()
	if c != nil && c.alive(ctx) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return g.reconnect(ctx, errors.New("the SSH connection is dead"))
}

// reconnect replaces a lost connection: it redials the same address with
// the pinned host key, with the wait's backoff, until ctx ends. It logs one
// warning per reconnect. It fails at once on another host key, after Close,
// and once Clean removed the builder's key (no login can succeed then).
func (g *Guest) reconnect(ctx context.Context, cause error) error {
	g.connMu.Lock()
	old, closed, keyRemoved := g.cur, g.closed, g.keyRemoved
	g.connMu.Unlock()
	switch {
	case closed:
		return errs.Wrap(errs.KindInternal, cause, "SSH to %s: the connection was closed", g.addr)
	case keyRemoved:
		return errs.Wrap(errs.KindBuild, fmt.Errorf("%w: %w", ErrKeyRemoved, cause),
			"the SSH connection to %s was lost after the builder's key was removed from the guest, so it cannot be reopened", g.addr)
	}
	if old != nil {
		_ = old.client.Close()
	}
	g.log.Warn("SSH connection to the guest lost; reconnecting with the same host key", "err", cause)
	keys := pinnedKeys(g.hostKey)
	delay := g.poll
	lastErr := cause
	for attempt := 1; ; attempt++ {
		client, _, err := dialOnce(ctx, g.target, keys)
		if err == nil {
			g.connMu.Lock()
			if g.closed {
				g.connMu.Unlock()
				_ = client.Close()
				return errs.New(errs.KindInternal, "SSH to %s: the connection was closed while reconnecting", g.addr)
			}
			g.cur = watchConn(client)
			g.connMu.Unlock()
			g.log.Info("SSH reconnected", "attempts", attempt)
			return nil
		}
		if errors.Is(err, ErrHostKeyMismatch) {
			return errs.Wrap(errs.KindBuild, err, "reconnecting SSH to %s", g.addr)
		}
		if jerr := JumpError(err, g.addr); jerr != nil {
			return jerr
		}
		if ctx.Err() == nil {
			lastErr = err
		}
		g.log.Debug("SSH reconnect attempt failed", "attempt", attempt, "err", err)
		if g.sleep(ctx, delay) != nil {
			if errors.Is(ctx.Err(), context.Canceled) {
				return errs.Wrap(errs.KindInterrupted, context.Cause(ctx), "reconnecting SSH to %s interrupted", g.addr)
			}
			return errs.Wrap(errs.KindBuild, lastErr,
				"the SSH connection to %s was lost and could not be reopened before the deadline; last error", g.addr)
		}
		delay = min(2*delay, maxRetryInterval)
	}
}

// pinnedKeys accepts exactly key, offering only its algorithms.
func pinnedKeys(key ssh.PublicKey) *acceptedKeys {
	a := newAcceptedKeys([]hostKey{{fingerprint: ssh.FingerprintSHA256(key), algos: keyAlgos(key.Type())}})
	a.pinned = true
	return a
}

// keyAlgos are the host key algorithms a key of type keyType can be
// presented with; nil for types we do not accept as host keys.
func keyAlgos(keyType string) []string {
	switch keyType {
	case ssh.KeyAlgoRSA:
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}
	case ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521:
		return []string{keyType}
	default:
		return nil
	}
}

// lostWhileRunning is the error of a script whose connection went away while
// it ran: its outcome is unknown and it is not run again.
func (g *Guest) lostWhileRunning(what string, err error) error {
	return errs.Wrap(errs.KindBuild, err,
		"the SSH connection to the guest at %s was lost while the %s ran; the %s was not run again (it may not be safe to repeat)",
		g.addr, what, what)
}

// connectFailed classifies a failed ensureConnected before what.
func connectFailed(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return ctxError(ctx, what)
	}
	return err
}
