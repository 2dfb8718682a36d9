package provision

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// This file routes the guest's SSH through a jump host, as OpenSSH's
// ProxyJump does: each connection to the guest is one SSH connection to
// the jump host, whose host key must be one its known_hosts lists, and a
// direct-tcpip channel from there to the guest's sshd; the guest's own
// handshake (its host key checked as without a jump) runs inside that
// channel, so the jump host only forwards encrypted bytes. Nothing is
// forwarded to the jump host but that TCP stream: no agent, no session,
// no environment.

// Jump is an SSH jump host the guest is reached through.
type Jump struct {
	Addr string // host:port of the jump host's sshd
	User string
	// Signer is the key to log in with; nil: the keys of the SSH agent
	// listening at AgentSocket.
	Signer      ssh.Signer
	AgentSocket string
	// HostKeyCallback checks the jump host's key (a knownhosts callback);
	// HostKeys are the keys it knows for Addr, which choose the host key
	// algorithms offered. KnownHostsFile only names the file in messages.
	HostKeyCallback ssh.HostKeyCallback
	HostKeys        []ssh.PublicKey
	KnownHostsFile  string
}

// ErrJumpRefused is in the error of a jump host whose host key is not the
// one known_hosts lists for it, or that refused the builder's key: a
// connection attempt is not retried then.
var ErrJumpRefused = errors.New("the jump host was refused or refused us")

// jumpRefused is an error that says why, and is ErrJumpRefused.
type jumpRefused struct{ msg string }

func (e *jumpRefused) Error() string        { return e.msg }
func (e *jumpRefused) Is(target error) bool { return target == ErrJumpRefused }

func refused(format string, args ...any) error {
	return &jumpRefused{msg: fmt.Sprintf(format, args...)}
}

// JumpError is err classified when no retry can mend it, else nil: a jump
// host's refusal (errs.KindAuth, naming the guest's address), or no key
// to log in to the jump host with (errs.KindUsage, as it is).
func JumpError(err error, guestAddr string) error {
	switch {
	case errors.Is(err, ErrJumpRefused):
		return errs.Wrap(errs.KindAuth, err, "SSH to %s through the jump host", guestAddr)
	case errs.Is(err, errs.KindUsage):
		return err
	}
	return nil
}

// DialTCP opens a TCP connection to addr: directly when j is nil, else
// from the jump host. Closing the connection closes the jump host's too.
func DialTCP(ctx context.Context, j *Jump, addr string) (net.Conn, error) {
	if j == nil {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	return j.dial(ctx, addr)
}

func (j *Jump) dial(ctx context.Context, addr string) (net.Conn, error) {
	if j.HostKeyCallback == nil {
		return nil, errs.New(errs.KindInternal, "jump host %s without a host key check", j.Addr)
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", j.Addr)
	if err != nil {
		return nil, fmt.Errorf("jump host %s: %w", j.Addr, err)
	}
	// Closing the connection is the only way to abort a handshake in progress.
	stop := context.AfterFunc(ctx, func() { _ = raw.Close() })
	auth, closeAuth, err := j.auth(ctx)
	if err != nil {
		stop()
		_ = raw.Close()
		return nil, err
	}
	defer closeAuth()
	var keyErr error
	cfg := &ssh.ClientConfig{
		User: j.User,
		Auth: auth,
		HostKeyCallback: func(hostname string, remote net.Addr, key ssh.PublicKey) error {
			if err := j.HostKeyCallback(hostname, remote, key); err != nil {
				keyErr = j.hostKeyRefused(key, err)
				return keyErr
			}
			return nil
		},
		HostKeyAlgorithms: j.algorithms(),
	}
	c, chans, reqs, err := ssh.NewClientConn(raw, j.Addr, cfg)
	if !stop() {
		if err == nil {
			_ = c.Close()
		}
		return nil, fmt.Errorf("SSH handshake with the jump host %s: %w", j.Addr, context.Cause(ctx))
	}
	if err != nil {
		_ = raw.Close()
		switch {
		case keyErr != nil:
			return nil, keyErr
		case strings.Contains(err.Error(), "unable to authenticate"):
			return nil, refused("the jump host %s refused the login of %s with %s", j.Addr, j.User, j.keyName())
		}
		return nil, fmt.Errorf("SSH handshake with the jump host %s: %w", j.Addr, err)
	}
	client := ssh.NewClient(c, chans, reqs)
	conn, err := client.DialContext(ctx, "tcp", addr)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("the jump host %s could not connect to %s: %w", j.Addr, addr, err)
	}
	return &jumpConn{Conn: conn, jump: client}, nil
}

// auth is the login method: the key, or the agent's keys (the agent's
// connection is closed by the returned func once the handshake is over).
func (j *Jump) auth(ctx context.Context) ([]ssh.AuthMethod, func(), error) {
	if j.Signer != nil {
		return []ssh.AuthMethod{ssh.PublicKeys(j.Signer)}, func() {}, nil
	}
	if j.AgentSocket == "" {
		return nil, nil, errs.Usage("no key for the jump host %s: give --ssh-jump-key or run an SSH agent (SSH_AUTH_SOCK is unset)", j.Addr)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", j.AgentSocket)
	if err != nil {
		return nil, nil, errs.Wrap(errs.KindUsage, err, "the SSH agent for the jump host %s (SSH_AUTH_SOCK) does not answer; give --ssh-jump-key or start the agent", j.Addr)
	}
	return []ssh.AuthMethod{ssh.PublicKeysCallback(agent.NewClient(c).Signers)}, func() { _ = c.Close() }, nil
}

func (j *Jump) keyName() string {
	if j.Signer != nil {
		return "the --ssh-jump-key key " + ssh.FingerprintSHA256(j.Signer.PublicKey())
	}
	return "the SSH agent's keys"
}

// hostKeyRefused says why the jump host's key was refused, with
// ErrJumpRefused in the chain.
func (j *Jump) hostKeyRefused(key ssh.PublicKey, err error) error {
	file := j.KnownHostsFile
	if file == "" {
		file = "known_hosts"
	}
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	fp := ssh.FingerprintSHA256(key)
	switch {
	case errors.As(err, &re):
		return refused("the jump host %s presented the revoked host key %s", j.Addr, fp)
	case errors.As(err, &ke) && len(ke.Want) > 0:
		return refused("the jump host %s presented host key %s, which is not the one %s line %d lists for it: "+
			"someone may be in the middle, or the jump host's key changed; check it before editing the file",
			j.Addr, fp, ke.Want[0].Filename, ke.Want[0].Line)
	case errors.As(err, &ke):
		return refused("the jump host %s presented host key %s, and %s lists no key for it", j.Addr, fp, file)
	}
	return refused("the jump host %s's host key %s: %v", j.Addr, fp, err)
}

// algorithms offers only the host key algorithms of the known keys, so
// the jump host presents one known_hosts can vouch for.
func (j *Jump) algorithms() []string {
	var out []string
	for _, k := range j.HostKeys {
		for _, a := range keyAlgos(k.Type()) {
			if !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	return out
}

// jumpConn is a connection forwarded by a jump host; closing it closes
// the jump host's SSH connection too.
type jumpConn struct {
	net.Conn
	jump *ssh.Client
	once sync.Once
}

func (c *jumpConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		if jerr := c.jump.Close(); err == nil && jerr != nil && !errors.Is(jerr, net.ErrClosed) {
			err = jerr
		}
	})
	return err
}
