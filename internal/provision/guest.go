package provision

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// Bounds used when the caller's context has no deadline of its own, and for
// cleanup that must run even after the caller's context ended.
const (
	defaultCommandTimeout = 2 * time.Minute
	cleanupTimeout        = 30 * time.Second
	captureLimit          = 1 << 20 // bytes of a command's stdout or stderr kept in memory
	outputTailBytes       = 4 << 10 // bytes of output quoted in an error
)

// Guest is an SSH connection to a builder guest. It is safe for sequential
// use by one goroutine; Close it when done (PowerOff closes it too). Where
// redoing the work is safe it survives a lost connection by redialling with
// the host key accepted at the first dial (see conn.go).
type Guest struct {
	target  Target        // how the guest was dialled, for redials
	hostKey ssh.PublicKey // the host key accepted at the first dial: the only one a redial accepts
	addr    string
	user    string
	key     ssh.PublicKey // the builder's key, removed from the guest by Clean
	log     *slog.Logger
	poll    time.Duration // first pause between status reads
	sleep   func(context.Context, time.Duration) error
	// readTimeout bounds one cloud-init status read; a read without an
	// answer by then counts as a lost connection.
	readTimeout time.Duration

	// sudo prefixes commands that must run as root; tmpBase is the tmpfs
	// directory where scripts are pushed. Tests point them elsewhere.
	sudo    string
	tmpBase string

	connMu     sync.Mutex
	cur        *conn // nil after Close
	closed     bool
	keyRemoved bool // Clean removed the builder's key: a redial cannot log in

	mu       sync.Mutex
	tempDirs []string // pushed-script directories not yet removed
}

func newGuest(client *ssh.Client, hostKey ssh.PublicKey, t Target, log *slog.Logger) *Guest {
	return &Guest{
		target:      t,
		hostKey:     hostKey,
		addr:        t.Addr,
		user:        t.User,
		key:         t.Signer.PublicKey(),
		log:         log,
		poll:        t.retryInterval(),
		sleep:       t.sleeper(),
		readTimeout: defaultCommandTimeout,
		sudo:        "sudo -n",
		tmpBase:     "/run",
		cur:         watchConn(client),
	}
}

// Close closes the SSH connection; the Guest cannot reconnect afterwards.
func (g *Guest) Close() error {
	g.connMu.Lock()
	defer g.connMu.Unlock()
	g.closed = true
	if g.cur == nil {
		return nil
	}
	err := g.cur.client.Close()
	g.cur = nil
	return err
}

// errSessionNotStarted marks failures before the remote command was known
// to run: no session, or its exec request got no positive answer (it may
// still have started when the connection was lost meanwhile).
var errSessionNotStarted = errors.New("SSH session not started")

// errNoSession marks failures to open a session: the command was never sent.
var errNoSession = fmt.Errorf("%w", errSessionNotStarted)

// run runs cmd on the guest through the login user's shell, with stdin,
// stdout and stderr attached (any may be nil), until it exits or ctx ends. A
// non-zero exit is an *ssh.ExitError. cmd must never hold a secret: sshd and
// sudo may log command lines.
func (g *Guest) run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c := g.current()
	if c == nil {
		return fmt.Errorf("%w: the SSH connection to %s is closed", errNoSession, g.addr)
	}
	sess, err := c.newSession(ctx)
	if err != nil {
		return fmt.Errorf("%w: opening an SSH session to %s: %w", errNoSession, g.addr, err)
	}
	defer sess.Close()
	sess.Stdin, sess.Stdout, sess.Stderr = stdin, stdout, stderr
	if err := sess.Start(cmd); err != nil {
		return fmt.Errorf("%w: starting a command on %s: %w", errSessionNotStarted, g.addr, err)
	}
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		_ = sess.Signal(ssh.SIGKILL)
		_ = sess.Close()
		// Let the output copiers finish so callers may read their buffers;
		// bounded, since a dead connection may never answer.
		timer := time.NewTimer(5 * time.Second)
		defer timer.Stop()
		select {
		case <-done:
		case <-timer.C:
		}
		return ctx.Err()
	}
}

// output runs cmd and returns what it printed (each stream capped at 1 MiB).
// stderr, which only ever goes into messages, has the Target's secrets
// masked; stdout is what the caller parses, so it is left as it is.
func (g *Guest) output(ctx context.Context, cmd string, stdin io.Reader) (stdout, stderr []byte, err error) {
	var o, e cappedBuffer
	o.max, e.max = captureLimit, captureLimit
	err = g.run(ctx, cmd, stdin, &o, &e)
	return o.Bytes(), []byte(g.redactCapped(&e)), err
}

// redactCapped is c's text with the Target's secrets masked. When the cap
// cut the text, its end may be the first part of a secret whose rest was
// dropped, which no mask would match: that end is dropped too.
func (g *Guest) redactCapped(c *cappedBuffer) string {
	raw := c.Bytes()
	if r := newRedactor(g.target.Secrets); c.wasCut() && !r.empty() {
		raw = raw[:r.pending(raw)]
	}
	return g.redact(string(raw), nil)
}

// cappedBuffer keeps the first max bytes written to it; safe for concurrent use.
type cappedBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
	cut bool // something written was dropped
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	room := max(0, c.max-c.buf.Len())
	c.buf.Write(p[:min(len(p), room)])
	if len(p) > room {
		c.cut = true
	}
	return len(p), nil
}

func (c *cappedBuffer) wasCut() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cut
}

func (c *cappedBuffer) Bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.buf.Bytes())
}

// lockedWriter serialises writes from a session's stdout and stderr copiers.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// exitStatus returns the remote exit status carried by err, if any.
func exitStatus(err error) (int, bool) {
	var exit *ssh.ExitError
	if errors.As(err, &exit) {
		return exit.ExitStatus(), true
	}
	return 0, false
}

// withDefaultTimeout bounds ctx by d unless it already has a deadline.
func withDefaultTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// ctxError classifies the end of ctx: KindInterrupted when cancelled,
// KindBuild when its deadline passed. what names the interrupted work.
func ctxError(ctx context.Context, what string) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return errs.Wrap(errs.KindInterrupted, context.Cause(ctx), "%s interrupted", what)
	}
	return errs.Wrap(errs.KindBuild, context.Cause(ctx), "%s did not finish before its deadline", what)
}

// redact masks the Target's secrets, and extra, in text from the guest.
func (g *Guest) redact(text string, extra map[string]string) string {
	return Redact(text, g.secretsAnd(extra))
}

// secretsAnd returns the Target's secrets and extra together.
func (g *Guest) secretsAnd(extra map[string]string) map[string]string {
	if len(extra) == 0 {
		return g.target.Secrets
	}
	all := make(map[string]string, len(g.target.Secrets)+len(extra))
	for k, v := range g.target.Secrets {
		all["target "+k] = v
	}
	for k, v := range extra {
		all["extra "+k] = v
	}
	return all
}

// Failure is the evidence of a failure inside the guest: one line saying
// what failed, the messages the guest reported, and the tail of the relevant
// output or log (secrets already redacted). It is wrapped in an *errs.Error;
// use errors.As to render the parts separately.
type Failure struct {
	What   string   // one line: what failed, where
	Errors []string // messages reported by the guest (e.g. cloud-init's errors)
	Tail   string   // last lines of TailOf
	TailOf string   // what Tail is the end of, e.g. "/var/log/cloud-init-output.log"
}

func (f *Failure) Error() string {
	var b strings.Builder
	b.WriteString(f.What)
	if len(f.Errors) > 0 {
		b.WriteString(": ")
		b.WriteString(strings.Join(f.Errors, "; "))
	}
	if f.Tail != "" {
		fmt.Fprintf(&b, "\n--- last lines of %s ---\n%s", f.TailOf, f.Tail)
	}
	return b.String()
}

func classified(k errs.Kind, f *Failure) error { return &errs.Error{Kind: k, Err: f} }

// Tail returns the last n lines of the file at path on the guest (read as
// root), or a note saying why it could not be read. It is meant for error
// reports, so it never fails. It redials a dead connection first (it only
// reads). The Target's secrets are masked before the last n lines are cut,
// so a secret spanning lines is masked whole even where the cut falls in it.
func (g *Guest) Tail(ctx context.Context, path string, n int) string {
	ctx, cancel := withDefaultTimeout(ctx, cleanupTimeout)
	defer cancel()
	if err := g.ensureConnected(ctx); err != nil {
		return fmt.Sprintf("(could not read %s: %v)", path, err)
	}
	n = max(n, 1)
	// Read as many more lines as a secret can span, then cut after masking.
	extra := 0
	for _, v := range g.target.Secrets {
		extra = max(extra, strings.Count(v, "\n")+1)
	}
	stdout, stderr, err := g.output(ctx, fmt.Sprintf("%s tail -n %d -- %s", g.sudo, n+extra, shellQuote(path)), nil)
	if err != nil {
		msg := strings.TrimSpace(string(stderr))
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Sprintf("(could not read %s: %s)", path, msg)
	}
	return lastLines(g.redact(string(stdout), nil), n)
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Endpoint is how the guest was reached: its address (host:port), login
// user and the host key the first dial accepted (pinned).
func (g *Guest) Endpoint() (addr, user string, hostKey ssh.PublicKey) {
	return g.addr, g.user, g.hostKey
}
