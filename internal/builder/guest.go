package builder

// This file holds the guest provisioning steps that both builders run once
// their guest has booted (the openstack builder on a Nova server, the local
// builder on a qemu process). Their API is meant to stay stable:
//
//	steps := builder.GuestSteps(builder.GuestConfig{...})
//
// returns, in order:
//
//	"ssh"         connect as User with Signer; the host key must be one whose
//	              fingerprint cloud-init printed on the console (Console),
//	              else fail closed, unless InsecureSkipHostKeyCheck. cloud-init
//	              prints the keys after the user-data's scripts ran, so this
//	              step is bounded by the SSH plus the cloud-init timeout
//	"cloud-init"  wait for cloud-init from its JSON status; error/disabled fail
//	"script"      only when Script is set: push it over SSH and run it as
//	              root, secrets on the session's stdin only
//	"verify"      Checks (ChecksFor builds them from a RunSpec); a failure is
//	              errs.KindVerify (exit 7): publish nothing
//	"clean"       reset cloud-init, remove the builder's key and temp files
//	"power-off"   shut the guest down (the caller then waits for it to stop)
//
// A failure of any of them carries the redacted tail of the console and of
// /var/log/cloud-init-output.log (see GuestFailure).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/provision"
	"github.com/runner-image-builder/github-runner-image-builder/internal/statedir"
)

// DefaultGuestUser is the login user of Ubuntu cloud images (and of the test image).
const DefaultGuestUser = "ubuntu"

// Bounds of the guest steps that have no flag of their own.
const (
	guestCleanTimeout    = 5 * time.Minute
	guestZeroTimeout     = 30 * time.Minute // more for "clean" with ZeroFreeSpace
	guestPowerOffTimeout = 2 * time.Minute
	tailTimeout          = 30 * time.Second
	tailLines            = 30
	cloudInitOutputLog   = "/var/log/cloud-init-output.log"
	maxScriptBytes       = 10 << 20
)

// GuestConfig configures GuestSteps.
type GuestConfig struct {
	// Address returns host:port of the guest's sshd. It is called when the
	// "ssh" step starts (an OpenStack server's address is known only then).
	Address func(ctx context.Context) (string, error)
	User    string     // login user; DefaultGuestUser when empty
	Signer  ssh.Signer // the prefix's key (statedir.EnsureKey)
	// Console reads the guest's console so far. It vouches for the host key
	// and gives failures their console tail. Required unless
	// InsecureSkipHostKeyCheck (it is still used for tails when set).
	Console                  provision.ConsoleReader
	InsecureSkipHostKeyCheck bool

	Script  []byte                   // the user's script (FetchScript); nil: no "script" step
	Secrets map[string]config.Secret // the script's environment, never logged
	Checks  provision.Checks         // what "verify" runs (ChecksFor)

	Timeouts config.Timeouts // SSH, CloudInit and Script bound their steps
	// ZeroFreeSpace zeroes the guest's free space in "clean" (which then
	// gets guestZeroTimeout more).
	ZeroFreeSpace bool
	Log           *slog.Logger // nil: discard
	// Output receives the script's and the verify script's output (secrets
	// redacted); nil logs it line by line at info level.
	Output io.Writer
}

// GuestSession is the SSH connection the guest steps share. Steps after
// "ssh" use it; its zero value is ready.
type GuestSession struct {
	mu    sync.Mutex
	guest *provision.Guest
}

// Guest returns the connected guest, or nil before "ssh" succeeded.
func (s *GuestSession) Guest() *provision.Guest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.guest
}

func (s *GuestSession) set(g *provision.Guest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.guest = g
}

func (s *GuestSession) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.guest != nil {
		_ = s.guest.Close()
		s.guest = nil
	}
}

// GuestSteps returns the provisioning steps of a booted guest (see the
// file comment for the list). Each is bounded by its phase's timeout and
// names its flag; the "ssh" step's cleanup closes the connection.
func GuestSteps(cfg GuestConfig) []Step {
	return guestSteps(cfg, nil, &GuestSession{})
}

// guestSteps builds the steps. late, if set, completes the configuration
// when each step starts (for what the builder learns in earlier steps: the
// key). Whether there is a "script" step, Timeouts, Log and Output are read
// from base.
func guestSteps(base GuestConfig, late func(GuestConfig) GuestConfig, sess *GuestSession) []Step {
	hasScript := len(base.Script) > 0
	log := base.logger()
	get := func() GuestConfig {
		if late == nil {
			return base
		}
		return late(base)
	}
	fail := func(ctx context.Context, cfg GuestConfig, err error) error {
		return decorateGuestError(ctx, cfg, sess, revealAll(cfg.Secrets), err)
	}
	needGuest := func() (*provision.Guest, error) {
		g := sess.Guest()
		if g == nil {
			return nil, errs.New(errs.KindInternal, "no SSH connection to the guest")
		}
		return g, nil
	}
	out := base.Output
	// cloud-init prints the host keys (keys-to-console) in its final stage,
	// after the user-data's scripts: the built-in recipe, or a runcmd. With
	// the console policy the first connection therefore waits for the
	// recipe, and may take as long as SSH and cloud-init together.
	sshTimeout, sshFlag := base.Timeouts.SSH, "--ssh-timeout"
	if !base.InsecureSkipHostKeyCheck {
		sshTimeout, sshFlag = base.Timeouts.SSH+base.Timeouts.CloudInit, "--ssh-timeout or --cloud-init-timeout"
	}
	steps := []Step{
		{
			Name: "ssh", Timeout: sshTimeout, TimeoutFlag: sshFlag,
			Run: func(ctx context.Context) error {
				cfg := get()
				addr, err := cfg.Address(ctx)
				if err != nil {
					return fail(ctx, cfg, err)
				}
				if !cfg.InsecureSkipHostKeyCheck {
					// The step may wait as long as the recipe for the host keys,
					// but a guest whose sshd never answers fails at --ssh-timeout.
					if err := waitSSHBanner(ctx, addr, base.Timeouts.SSH); err != nil {
						return fail(ctx, cfg, err)
					}
				}
				policy, err := hostKeyPolicy(cfg)
				if err != nil {
					return err
				}
				if cfg.InsecureSkipHostKeyCheck {
					log.Warn("SSH host key not checked (--insecure-skip-host-key-check)", "addr", addr)
				}
				user := cfg.User
				if user == "" {
					user = DefaultGuestUser
				}
				g, err := provision.Dial(ctx, provision.Target{Addr: addr, User: user, Signer: cfg.Signer, HostKeys: policy, Logger: log,
					Secrets: revealAll(cfg.Secrets)})
				if err != nil {
					return fail(ctx, cfg, err)
				}
				sess.set(g)
				log.Info("SSH connected", "addr", addr, "user", user)
				return nil
			},
			Cleanup: func(context.Context, bool) error { sess.close(); return nil },
		},
		{
			Name: "cloud-init", Timeout: base.Timeouts.CloudInit, TimeoutFlag: "--cloud-init-timeout",
			Run: func(ctx context.Context) error {
				cfg := get()
				g, err := needGuest()
				if err != nil {
					return err
				}
				st, err := g.WaitCloudInit(ctx)
				if err != nil {
					return fail(ctx, cfg, err)
				}
				log.Info("cloud-init finished", "state", string(st.State))
				if cfg.Console != nil && log.Enabled(ctx, slog.LevelDebug) {
					if console, err := cfg.Console(ctx); err == nil {
						log.Debug("console after cloud-init", "console", consoleTail(console, 200, revealAll(cfg.Secrets)))
					}
				}
				return nil
			},
		},
	}
	if hasScript {
		steps = append(steps, Step{
			Name: "script", Timeout: base.Timeouts.Script, TimeoutFlag: "--script-timeout",
			Run: func(ctx context.Context) error {
				cfg := get()
				g, err := needGuest()
				if err != nil {
					return err
				}
				if len(cfg.Script) == 0 {
					return errs.New(errs.KindInternal, "no script to run")
				}
				w, flush := outputWriter(out, log, "script")
				err = g.RunScript(ctx, cfg.Script, revealAll(cfg.Secrets), w)
				flush()
				if err != nil {
					return fail(ctx, cfg, err)
				}
				log.Info("script succeeded")
				return nil
			},
		})
	}
	steps = append(steps,
		Step{
			Name: "verify", Timeout: base.Timeouts.Script, TimeoutFlag: "--script-timeout",
			Run: func(ctx context.Context) error {
				cfg := get()
				g, err := needGuest()
				if err != nil {
					return err
				}
				checks := cfg.Checks
				w, flush := outputWriter(out, log, "verify-script")
				checks.Out = w
				err = g.Verify(ctx, checks)
				flush()
				if err != nil {
					return fail(ctx, cfg, err)
				}
				log.Info("image verified", "checks", len(checks.List), "verify_script", len(checks.Script) > 0)
				return nil
			},
		},
		Step{
			Name: "clean", Timeout: cleanTimeout(base),
			Run: func(ctx context.Context) error {
				cfg := get()
				g, err := needGuest()
				if err != nil {
					return err
				}
				if cfg.ZeroFreeSpace {
					if err := g.ZeroFreeSpace(ctx); err != nil {
						return fail(ctx, cfg, err)
					}
				}
				if err := g.Clean(ctx); err != nil {
					return fail(ctx, cfg, err)
				}
				return nil
			},
		},
		Step{
			Name: "power-off", Timeout: guestPowerOffTimeout,
			Run: func(ctx context.Context) error {
				g, err := needGuest()
				if err != nil {
					return err
				}
				err = g.PowerOff(ctx) // closes the connection
				sess.set(nil)
				if errors.Is(err, provision.ErrKeyRemoved) {
					// The image is clean; the builder stops the machine itself
					// (Nova's stop, or qemu's ACPI power button).
					log.Warn("could not tell the guest to power off over SSH; stopping it from outside", "error", err)
					return nil
				}
				return err
			},
		},
	)
	return steps
}

func hostKeyPolicy(cfg GuestConfig) (provision.HostKeyPolicy, error) {
	switch {
	case cfg.InsecureSkipHostKeyCheck:
		return provision.InsecureAcceptAnyHostKey(), nil
	case cfg.Console == nil:
		return provision.HostKeyPolicy{}, errs.New(errs.KindInternal, "no console to check the guest's SSH host key against")
	default:
		return provision.ConsoleHostKeys(cfg.Console), nil
	}
}

func revealAll(secrets map[string]config.Secret) map[string]string {
	out := make(map[string]string, len(secrets))
	for k, v := range secrets {
		out[k] = v.Reveal()
	}
	return out
}

// GuestFailure is a failed guest step with its evidence: the redacted tails
// of the console and of cloud-init's output log. It wraps the step's error
// (whose kind it keeps); its message is the step error's, redacted.
type GuestFailure struct {
	Err          error
	Console      string // last lines of the console ("" if unreadable)
	CloudInitLog string // last lines of /var/log/cloud-init-output.log ("" if not read)
	msg          string // Err's message, redacted
}

func (f *GuestFailure) Error() string {
	var b strings.Builder
	b.WriteString(f.msg)
	if f.CloudInitLog != "" {
		fmt.Fprintf(&b, "\n--- last lines of %s ---\n%s", cloudInitOutputLog, f.CloudInitLog)
	}
	if f.Console != "" {
		fmt.Fprintf(&b, "\n--- last lines of the console ---\n%s", f.Console)
	}
	return b.String()
}

func (f *GuestFailure) Unwrap() error { return f.Err }

// decorateGuestError adds the console's and cloud-init's tails to a guest
// step's failure, redacted, keeping its kind. Interruptions are returned
// as they are (nobody needs the evidence, and time is short).
func decorateGuestError(ctx context.Context, cfg GuestConfig, sess *GuestSession, secrets map[string]string, err error) error {
	if err == nil || errs.Is(err, errs.KindInterrupted) || errors.Is(ctx.Err(), context.Canceled) {
		return err
	}
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tailTimeout)
	defer cancel()
	f := &GuestFailure{Err: err, msg: provision.Redact(err.Error(), secrets)}
	if cfg.Console != nil {
		if console, cerr := cfg.Console(tctx); cerr == nil {
			f.Console = consoleTail(console, tailLines, secrets)
		} else {
			f.Console = provision.Redact(fmt.Sprintf("(could not read the console: %v)", cerr), secrets)
		}
	}
	var pf *provision.Failure
	alreadyHasLog := errors.As(err, &pf) && pf.TailOf == cloudInitOutputLog
	if g := sess.Guest(); g != nil && !alreadyHasLog {
		f.CloudInitLog = g.Tail(tctx, cloudInitOutputLog, tailLines) // redacted by the guest before the cut
	}
	cfg.logger().Error("guest step failed", "error", f.msg,
		"console_tail", f.Console, "cloud_init_output_tail", f.CloudInitLog)
	return &errs.Error{Kind: errs.KindOf(err), Err: f}
}

func (cfg GuestConfig) logger() *slog.Logger {
	if cfg.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return cfg.Log
}

// consoleTail returns the last n lines of a console, redacted: the secrets
// are masked in the console as read (a secret may hold a newline, a CR or
// another control character), then again once escapes and control
// characters are gone (which may join a secret that they split), and only
// then is it cut, so the cut never keeps a part of a secret.
func consoleTail(console string, n int, secrets map[string]string) string {
	return lastLines(provision.Redact(printable(provision.Redact(console, secrets)), secrets), n)
}

// ansiEscape matches terminal escape sequences (colours, cursor moves).
var ansiEscape = regexp.MustCompile(`\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]`)

// printable strips a console's terminal escapes, carriage returns and other
// control characters, and replaces bytes that are not UTF-8.
func printable(console string) string {
	s := ansiEscape.ReplaceAllString(console, "")
	s = strings.ToValidUTF8(s, "?")
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\t':
			return r
		case r < 0x20 || r == 0x7f:
			return -1
		}
		return r
	}, s)
}

// lastLines keeps the last n lines of s, without a trailing newline.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// outputWriter returns w, or a writer that logs each line at info level with
// from=name; call flush when the output ends.
func outputWriter(w io.Writer, log *slog.Logger, name string) (io.Writer, func()) {
	if w != nil {
		return w, func() {}
	}
	lw := &lineLogger{log: log, from: name}
	return lw, lw.flush
}

// lineLogger logs what is written to it, one record per line.
type lineLogger struct {
	mu   sync.Mutex
	log  *slog.Logger
	from string
	buf  []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.log.Info("guest output", "from", l.from, "line", string(bytes.TrimRight(l.buf[:i], "\r")))
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > 64<<10 { // a very long line: log it in pieces
		l.log.Info("guest output", "from", l.from, "line", string(l.buf))
		l.buf = nil
	}
	return len(p), nil
}

func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.log.Info("guest output", "from", l.from, "line", string(l.buf))
		l.buf = nil
	}
}

// cleanTimeout bounds the "clean" step: zeroing the free space reads and
// writes all of it once.
func cleanTimeout(cfg GuestConfig) time.Duration {
	if cfg.ZeroFreeSpace {
		return guestCleanTimeout + guestZeroTimeout
	}
	return guestCleanTimeout
}

// jobGuestConfig is the guest steps' configuration of a job, less what
// only the builder knows (Address, Console, Signer).
func jobGuestConfig(job Job, log *slog.Logger, output io.Writer) GuestConfig {
	return GuestConfig{
		InsecureSkipHostKeyCheck: job.Spec.InsecureSkipHostKeyCheck,
		ZeroFreeSpace:            job.Spec.ZeroFreeSpace,
		Script:                   job.Script,
		Secrets:                  job.Spec.Secrets,
		Checks:                   job.Checks,
		Timeouts:                 job.Spec.Timeouts,
		Log:                      log,
		Output:                   output,
	}
}

// prefixKey reads (or makes, on first use) the prefix's SSH key; it fails
// before any server or VM exists, so a bad state directory costs nothing.
func prefixKey(ctx context.Context, getenv func(string) string, prefix string) (statedir.Key, error) {
	dir, err := config.StateDir(getenv, prefix)
	if err != nil {
		return statedir.Key{}, err
	}
	return statedir.EnsureKey(ctx, dir)
}

// withoutURL keeps the URL (its path and query may hold a token) out of
// the HTTP client's error: a *url.Error names the URL it fetched, also a
// redirect's target, so its URL becomes where (RedactedURL's form).
func withoutURL(err error, where string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		c := *ue
		c.URL = where
		return &c
	}
	return err
}

// FetchScript downloads the user's --script-url on the builder host (the
// guest never sees the URL). It refuses non-200 answers and scripts over
// 10 MiB. Errors: unreachable (KindUnreachable), 404/410 (KindNotFound),
// other answers (KindBuild). Only the URL's scheme and host are logged.
func FetchScript(ctx context.Context, client *http.Client, rawURL string, log *slog.Logger) ([]byte, error) {
	if client == nil {
		client = &http.Client{Timeout: 2 * time.Minute}
	}
	where := config.RedactedURL(rawURL)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, errs.Wrap(errs.KindUsage, err, "--script-url %s", where)
	}
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("fetching --script-url from %s: %w", where, ctx.Err())
		}
		return nil, errs.Wrap(errs.KindUnreachable, withoutURL(err, where), "fetching --script-url from %s", where)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return nil, errs.New(errs.KindNotFound, "--script-url at %s: HTTP %d", where, resp.StatusCode)
	case resp.StatusCode != http.StatusOK:
		return nil, errs.New(errs.KindBuild, "--script-url at %s: HTTP %d, want 200", where, resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxScriptBytes+1))
	if err != nil {
		return nil, errs.Wrap(errs.KindUnreachable, err, "reading --script-url from %s", where)
	}
	if len(data) > maxScriptBytes {
		return nil, errs.New(errs.KindBuild, "--script-url at %s: larger than %d MiB", where, maxScriptBytes>>20)
	}
	if len(data) == 0 {
		return nil, errs.New(errs.KindBuild, "--script-url at %s: the script is empty", where)
	}
	if log != nil {
		log.Info("script fetched", "from", where, "bytes", len(data))
	}
	return data, nil
}

// ChecksFor returns the verification of a run: the built-in recipe's checks
// for runnerVersion (unless spec.SkipDefaultChecks), plus the
// --verify-script's content verifyScript (read once, by the caller).
// runnerVersion "" accepts any runner version.
func ChecksFor(spec config.RunSpec, runnerVersion string, verifyScript []byte) (provision.Checks, error) {
	var c provision.Checks
	if !spec.SkipDefaultChecks {
		c = provision.DefaultChecks(runnerVersion)
	}
	c.Script = verifyScript
	if len(c.List) == 0 && len(c.Script) == 0 {
		return provision.Checks{}, errs.Usage("--skip-default-checks without --verify-script would publish an unverified image: give --verify-script")
	}
	return c, nil
}

// waitSSHBanner waits up to limit (and ctx) for an SSH server to greet on
// addr. sshd answers with its banner long before cloud-init prints the host
// keys, so this tells "still booting the recipe" from "never answers"
// (qemu's user network accepts every connection and closes it, so a TCP
// connect alone proves nothing). It sends its own identification first, as
// an SSH client may: passt (the local guest's network) passes the guest's
// banner on only once the host side has sent something.
func waitSSHBanner(ctx context.Context, addr string, limit time.Duration) error {
	const sshProbeIdent = "SSH-2.0-github-runner-image-builder-probe\r\n"
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var d net.Dialer
	for {
		if conn, err := d.DialContext(ctx, "tcp", addr); err == nil {
			_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
			buf := make([]byte, 4)
			_, rerr := io.WriteString(conn, sshProbeIdent)
			if rerr == nil {
				_, rerr = io.ReadFull(conn, buf)
			}
			_ = conn.Close()
			if rerr == nil && string(buf) == "SSH-" {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded && context.Cause(ctx) == context.DeadlineExceeded {
				return errs.New(errs.KindBuild, "no SSH server answered on %s within %s (raise it with --ssh-timeout)", addr, limit)
			}
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
