package builder

// This file holds the guest provisioning steps that both builders run once
// their guest has booted (the openstack builder on a Nova server, the local
// builder on a qemu process). Their API is meant to stay stable:
//
//	steps := builder.GuestSteps(builder.GuestConfig{...})
//
// returns, in order:
//
//	"ssh"         connect as User with Signer; the host key must be HostKey,
//	              the one the builder generated and put in the guest's
//	              user-data, else fail closed, unless InsecureSkipHostKeyCheck.
//	              sshd has that key as soon as cloud-init's first stages ran,
//	              so this step ends early in the boot, within --ssh-timeout
//	"cloud-init"  wait for cloud-init from its JSON status; error/disabled fail
//	"script"      only when Script is set: push it over SSH and run it as
//	              root, secrets on the session's stdin only
//	"verify"      Checks (ChecksFor builds them from a RunSpec); a failure is
//	              errs.KindVerify (exit 7): publish nothing
//	"manifest"    only when Manifest is set: list the guest's packages
//	              (dpkg-query) and snaps (snap list, when there is snap),
//	              write the image's manifest to manifest.GuestPath (root,
//	              0644) and hand its bytes to KeepManifest
//	"clean"       reset cloud-init, remove the builder's key and temp files
//	"power-off"   shut the guest down (the caller then waits for it to stop)
//
// A failure of any of them carries the redacted tail of the console (or a
// note, where the cloud forbids reading it) and of
// /var/log/cloud-init-output.log (see GuestFailure).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/manifest"
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
	guestManifestTimeout = 5 * time.Minute
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
	// HostKey is the SSH host key the guest was given in its user-data
	// (guestHostKey); "ssh" accepts only it. Required unless
	// InsecureSkipHostKeyCheck.
	HostKey ssh.PublicKey
	// Console reads the guest's console so far, for the tails of failures
	// (nil: none). An error wrapping ErrConsoleForbidden leaves the tail out
	// with a note.
	Console                  provision.ConsoleReader
	InsecureSkipHostKeyCheck bool
	// Jump is the jump host the guest's SSH goes through (SSHJump); nil: direct.
	Jump *provision.Jump

	Script  []byte                   // the user's script (FetchScript); nil: no "script" step
	Secrets map[string]config.Secret // the script's environment, never logged
	Checks  provision.Checks         // what "verify" runs (ChecksFor)
	// Manifest, when set, adds the "manifest" step: it returns the build's
	// part of the manifest (called when the step runs), which the step
	// completes with the guest's packages and snaps. KeepManifest receives
	// the file's bytes once the guest holds them.
	Manifest     func() manifest.Manifest
	KeepManifest func(data []byte)

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
	// reached is how "ssh" reached the guest (kept after close): what
	// --keep-on-failure prints.
	reached *guestEndpoint
}

// guestEndpoint is a guest's SSH address, login user and pinned host key.
type guestEndpoint struct {
	addr, user string
	hostKey    ssh.PublicKey
}

// endpoint is how "ssh" reached the guest, also after the session closed;
// nil when SSH never answered.
func (s *GuestSession) endpoint() *guestEndpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reached
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
	if g != nil {
		addr, user, key := g.Endpoint()
		s.reached = &guestEndpoint{addr: addr, user: user, hostKey: key}
	}
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
	hasManifest := base.Manifest != nil
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
	steps := []Step{
		{
			Name: "ssh", Timeout: base.Timeouts.SSH, TimeoutFlag: "--ssh-timeout",
			Run: func(ctx context.Context) error {
				cfg := get()
				addr, err := cfg.Address(ctx)
				if err != nil {
					return fail(ctx, cfg, err)
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
					Secrets: revealAll(cfg.Secrets), Jump: cfg.Jump})
				if err != nil {
					return fail(ctx, cfg, err)
				}
				sess.set(g)
				log.Info("SSH connected", "addr", addr, "user", user, "host_key", ssh.FingerprintSHA256(g.HostKey()))
				noteConsoleForbidden(ctx, cfg, log)
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
		})
	if hasManifest {
		steps = append(steps, Step{
			Name: "manifest", Timeout: guestManifestTimeout,
			Run: func(ctx context.Context) error {
				cfg := get()
				g, err := needGuest()
				if err != nil {
					return err
				}
				data, m, err := writeManifest(ctx, g, cfg.Manifest())
				if err != nil {
					return fail(ctx, cfg, err)
				}
				if cfg.KeepManifest != nil {
					cfg.KeepManifest(data)
				}
				log.Info("manifest written", "path", manifest.GuestPath, "packages", len(m.Packages), "snaps", len(m.Snaps),
					"sha256", manifest.SHA256(data))
				return nil
			},
		})
	}
	steps = append(steps,
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

// writeManifest completes m with the guest's packages and snaps, writes it
// into the guest and returns the file's bytes.
func writeManifest(ctx context.Context, g *provision.Guest, m manifest.Manifest) ([]byte, manifest.Manifest, error) {
	dpkg, snaps, err := g.Inventory(ctx, manifest.DpkgQueryFormat)
	if err != nil {
		return nil, m, err
	}
	if m.Packages, err = manifest.ParseDpkg(dpkg); err != nil {
		return nil, m, errs.Wrap(errs.KindBuild, err, "the guest's package list")
	}
	if m.Snaps, err = manifest.ParseSnapList(snaps); err != nil {
		return nil, m, errs.Wrap(errs.KindBuild, err, "the guest's snap list")
	}
	data, err := m.Marshal()
	if err != nil {
		return nil, m, errs.Wrap(errs.KindInternal, err, "")
	}
	if err := g.WriteFile(ctx, manifest.GuestPath, data, 0o644); err != nil {
		return nil, m, err
	}
	return data, m, nil
}

// newManifest is a build's part of its image's manifest: everything but
// what the guest holds.
func newManifest(job Job, info buildInfo, base manifest.BaseImage) manifest.Manifest {
	return manifest.Manifest{
		Schema: manifest.Schema, BuildID: info.ID, ImageName: job.Spec.ImageName,
		Base: string(job.Spec.Base), Arch: string(job.Spec.Arch),
		BuiltAt: info.Time.UTC().Format(time.RFC3339), BuilderVersion: info.BuilderVersion,
		BaseImage:    base,
		RecipeSHA256: manifest.SHA256(job.UserData),
		Runner:       manifest.Runner{Version: job.Runner.Version, SHA256: job.Runner.SHA256},
	}
}

func hostKeyPolicy(cfg GuestConfig) (provision.HostKeyPolicy, error) {
	switch {
	case cfg.InsecureSkipHostKeyCheck:
		return provision.InsecureAcceptAnyHostKey(), nil
	case cfg.HostKey == nil:
		return provision.HostKeyPolicy{}, errs.New(errs.KindInternal, "no generated SSH host key to check the guest's against")
	default:
		return provision.PinnedHostKey(cfg.HostKey), nil
	}
}

// noteConsoleForbidden reads the console once, when the guest is up, to
// say early (and on success too) that failures will have no console tail
// on a cloud that forbids reading it. Any other outcome says nothing.
func noteConsoleForbidden(ctx context.Context, cfg GuestConfig, log *slog.Logger) {
	if cfg.Console == nil {
		return
	}
	if _, err := cfg.Console(ctx); errors.Is(err, ErrConsoleForbidden) {
		log.Warn(consoleForbiddenNote)
	} else if err != nil {
		log.Debug("console not read", "error", err)
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
	ConsoleNote  string // why there is no console tail, when the cloud forbids reading it
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
	if f.ConsoleNote != "" {
		fmt.Fprintf(&b, "\n--- %s ---", f.ConsoleNote)
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
		} else if errors.Is(cerr, ErrConsoleForbidden) {
			f.ConsoleNote = consoleForbiddenNote
		} else {
			f.Console = provision.Redact(fmt.Sprintf("(could not read the console: %v)", cerr), secrets)
		}
	}
	var pf *provision.Failure
	alreadyHasLog := errors.As(err, &pf) && pf.TailOf == cloudInitOutputLog
	if g := sess.Guest(); g != nil && !alreadyHasLog {
		f.CloudInitLog = g.Tail(tctx, cloudInitOutputLog, tailLines) // redacted by the guest before the cut
	}
	attrs := []any{"error", f.msg, "console_tail", f.Console, "cloud_init_output_tail", f.CloudInitLog}
	if f.ConsoleNote != "" {
		attrs = []any{"error", f.msg, "console_note", f.ConsoleNote, "cloud_init_output_tail", f.CloudInitLog}
	}
	cfg.logger().Error("guest step failed", attrs...)
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
