package provision

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// Check is one verification command, run as the login user through its
// shell. It passes when it exits 0 and, if WantLine is set, one line of its
// output (stdout and stderr) equals WantLine once trimmed.
type Check struct {
	Name     string // shown in errors, e.g. "runner version"
	Command  string // must hold no secret
	WantLine string
}

// Checks is what Verify runs: every check in List, then Script (if any) as
// root like RunScript without secrets, its output streamed to Out (if set).
// The Target's secrets are masked in all of their output, as in the build
// script's: a verify script may print what the build script wrote.
type Checks struct {
	List   []Check
	Script []byte
	Out    io.Writer
}

// DefaultRunnerDir is where the built-in recipe installs the actions runner.
const DefaultRunnerDir = "/home/ubuntu/actions-runner"

// GARMRunnerDir is where GARM's runner install template looks for a
// runner already in the image (it runs it as user runner, home
// /home/runner); the recipe links /home/runner to /home/ubuntu, so this is
// DefaultRunnerDir under GARM's name.
const GARMRunnerDir = "/home/runner/actions-runner"

// runnerUserCheck passes when user runner exists with ubuntu's UID (the
// alias GARM runs its runner as, owning ubuntu's files) and dir holds the
// runner's config.sh; else it says which is wrong.
func runnerUserCheck(dir string) string {
	return fmt.Sprintf(`d=%s; id runner || exit 1; `+
		`if [ "$(id -u runner)" != "$(id -u ubuntu)" ]; then echo "user runner (UID $(id -u runner)) is not an alias of ubuntu (UID $(id -u ubuntu))"; exit 1; fi; `+
		`if [ ! -x "$d/config.sh" ]; then echo "no runner in $d, where GARM looks for it"; exit 1; fi`, shellQuote(dir))
}

// DefaultChecks are the checks of the built-in recipe: the runner reports
// runnerVersion (any version when empty), docker, gh and yq run, and the
// runner user exists as GARM needs it (runnerUserCheck).
func DefaultChecks(runnerVersion string) Checks {
	runner := fmt.Sprintf(`d=%s; if [ -x "$d/bin/Runner.Listener" ]; then exec "$d/bin/Runner.Listener" --version; else exec "$d/run.sh" --version; fi`,
		shellQuote(DefaultRunnerDir))
	return Checks{List: []Check{
		{Name: "runner version", Command: runner, WantLine: runnerVersion},
		{Name: "docker", Command: "docker --version"},
		{Name: "gh", Command: "gh --version"},
		{Name: "yq", Command: "yq --version"},
		{Name: "runner user", Command: runnerUserCheck(GARMRunnerDir)},
	}}
}

// Verify runs every check and the verify script, and reports all failures
// together: a KindVerify error naming each failed check with the tail of its
// output. Nothing should be published after an error. A dead connection is
// redialled before the first check.
func (g *Guest) Verify(ctx context.Context, c Checks) error {
	if err := g.ensureConnected(ctx); err != nil {
		return connectFailed(ctx, fmt.Sprintf("verifying the image on %s", g.addr), err)
	}
	var failed []string
	var tails []string
	for _, check := range c.List {
		msg, out, err := g.runCheck(ctx, check)
		if err != nil {
			return err
		}
		if msg != "" {
			failed = append(failed, fmt.Sprintf("%s: %s", check.Name, msg))
			tails = append(tails, fmt.Sprintf("[%s] $ %s\n%s", check.Name, check.Command, lastLines(out, 10)))
			g.log.Debug("verification check failed", "check", check.Name, "reason", msg)
		}
	}
	if len(c.Script) > 0 {
		err := g.runPushed(ctx, "verify script", c.Script, nil, nil, c.Out)
		var f *Failure
		switch {
		case err == nil:
		case errors.As(err, &f) && errs.Is(err, errs.KindBuild):
			failed = append(failed, f.What)
			tails = append(tails, fmt.Sprintf("[verify script]\n%s", f.Tail))
		default:
			return err
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return classified(errs.KindVerify, &Failure{
		What:   fmt.Sprintf("image verification failed on %s; nothing was published", g.addr),
		Errors: failed,
		Tail:   strings.Join(tails, "\n"),
		TailOf: "the failed checks' output",
	})
}

// runCheck runs one check. It returns why the check failed ("" when it
// passed) and its output; err only for failures of the connection or ctx.
func (g *Guest) runCheck(ctx context.Context, c Check) (reason, output string, err error) {
	ctx2, cancel := withDefaultTimeout(ctx, defaultCommandTimeout)
	defer cancel()
	buf := &cappedBuffer{max: captureLimit}
	err = g.run(ctx2, c.Command, nil, buf, buf)
	output = g.redactCapped(buf)
	code, isExit := exitStatus(err)
	switch {
	case err != nil && ctx.Err() != nil:
		return "", output, ctxError(ctx, fmt.Sprintf("verification check %q on %s", c.Name, g.addr))
	case err != nil && ctx2.Err() != nil:
		return "did not finish within " + defaultCommandTimeout.String(), output, nil
	case isExit:
		return fmt.Sprintf("exited with status %d", code), output, nil
	case err != nil:
		return "", output, errs.Wrap(errs.KindBuild, err, "running verification check %q on %s", c.Name, g.addr)
	}
	if c.WantLine != "" && !hasLine(output, c.WantLine) {
		return fmt.Sprintf("printed %q, want %q", firstLine(output), c.WantLine), output, nil
	}
	return "", output, nil
}

func hasLine(text, want string) bool {
	for line := range strings.Lines(text) {
		if strings.TrimSpace(line) == want {
			return true
		}
	}
	return false
}

func firstLine(text string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(text), "\n")
	return line
}

// lastLines returns the last n lines of text, trimmed.
func lastLines(text string, n int) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
