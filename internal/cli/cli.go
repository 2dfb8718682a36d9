// Package cli is the command line of github-runner-image-builder: the cobra
// commands and flags of Canonical's Python tool (same names and meanings)
// plus ours, their validation, and the mapping of errors to exit codes.
// It does no building itself: once a command's input is valid it calls the
// Backend, which the main package connects to the builders.
package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"

	"github.com/spf13/cobra"

	"github.com/runner-image-builder/github-runner-image-builder/internal/build"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/service"
)

// Backend does the work of the commands once their input is valid. A nil
// field makes its command fail with an internal "not implemented yet" error.
type Backend struct {
	// Init seeds a cloud (or the local cache) with base images, keypair and security group.
	Init func(ctx context.Context, log *slog.Logger, spec config.InitSpec) error
	// Builds runs `run` and the builder host's builds; nil can only
	// prepare dry runs.
	Builds *build.Builds
	// LatestBuildID returns the newest image's ID, or "" when there is none.
	LatestBuildID func(ctx context.Context, log *slog.Logger, q config.LatestQuery) (string, error)
	// Sweep removes (or with spec.DryRun lists) what crashed runs left behind.
	Sweep func(ctx context.Context, log *slog.Logger, spec config.SweepSpec) ([]config.SweptResource, error)
	// Catalog lists a cloud's images for the builder host's commands
	// (build, latest, serve); nil means internal/openstack. Tests set a fake.
	Catalog service.Catalog
}

// App is one invocation of the command line.
type App struct {
	Stdout, Stderr io.Writer
	// Environ is the process environment as KEY=VALUE (os.Environ()).
	Environ []string
	Backend Backend
	// GOARCH is the host's architecture in Go's spelling; "" means runtime.GOARCH.
	GOARCH string
	// Terminal says that Stderr is a terminal, where the builders print
	// their progress lines (main gives them the same terminal): during a
	// build (run, build --config) or a local init, stderr then shows the log's warnings and
	// errors only, the info records going to --log-file (or to stderr too
	// at --log-level debug). See quietForProgress.
	Terminal bool
}

// Main runs the command line with args (without the program name) and
// returns the process exit code. Errors are printed to Stderr as one line
// "Error: <message>".
func (a *App) Main(ctx context.Context, args []string) int {
	inv := &invocation{app: a}
	root := inv.rootCommand()
	root.SetArgs(args)
	root.SetOut(a.Stdout)
	root.SetErr(a.Stderr)
	err := root.ExecuteContext(ctx)
	inv.closeLog()
	if err == nil {
		return 0
	}
	if !inv.entered && !errs.Is(err, errs.KindUsage) {
		// Cobra's own errors (unknown command or flag, bad flag value) come
		// before any of our code ran: they are usage errors.
		err = errs.Wrap(errs.KindUsage, err, "")
	}
	if k := errs.KindOf(err); ctx.Err() != nil && k != errs.KindUsage && k != errs.KindInterrupted {
		// A signal ended the run: whatever failed after it, say so (exit 130).
		err = &errs.Error{Kind: errs.KindInterrupted, Msg: "interrupted", Err: err}
	}
	fmt.Fprintf(a.Stderr, "Error: %s\n", oneLine(err.Error()))
	return errs.ExitCode(err)
}

// Command returns the command tree (for documentation and tests).
func (a *App) Command() *cobra.Command { return (&invocation{app: a}).rootCommand() }

// oneLine makes an error message one line: the lines of a joined error
// (errors.Join: one per cloud) are kept apart by "; ".
func oneLine(s string) string {
	s = strings.ReplaceAll(strings.TrimSpace(s), "\r", "")
	var parts []string
	for _, line := range strings.Split(s, "\n") {
		if line = strings.Join(strings.Fields(line), " "); line != "" {
			parts = append(parts, line)
		}
	}
	return strings.Join(parts, "; ")
}

// invocation holds what the root's flags set up for one run of Main.
type invocation struct {
	app *App
	// entered is set when a command's own code starts: errors before it are cobra's.
	entered bool

	osCloud   string
	logLevel  string
	logFormat string
	logFile   string

	log         *slog.Logger
	stderrLevel *slog.LevelVar // stderr's level: --log-level, raised by quietForProgress
	closeFile   func() error
}

func (inv *invocation) getenv(key string) string { return config.Getenv(inv.app.Environ)(key) }

func (inv *invocation) goarch() string {
	if inv.app.GOARCH != "" {
		return inv.app.GOARCH
	}
	return runtime.GOARCH
}

func (inv *invocation) closeLog() {
	if inv.closeFile != nil {
		if err := inv.closeFile(); err != nil {
			fmt.Fprintf(inv.app.Stderr, "warning: closing --log-file: %v\n", err)
		}
	}
}

// cloud is --os-cloud, else $OS_CLOUD.
func (inv *invocation) cloud() string {
	if c := strings.TrimSpace(inv.osCloud); c != "" {
		return c
	}
	return strings.TrimSpace(inv.getenv("OS_CLOUD"))
}

func (inv *invocation) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "github-runner-image-builder",
		Short: "Build GitHub Actions runner VM images for OpenStack",
		Long: `Build GitHub Actions runner VM images for OpenStack, as Canonical's Python
github-runner-image-builder does (same commands, flags and resource names),
with checked downloads, bounded waits, cleanup on failure and safe pruning.

Logs go to stderr (and --log-file); stdout carries only results.
Exit codes: ` + exitCodeSummary(),
		SilenceUsage:      true,
		SilenceErrors:     true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
		Args:              cobra.NoArgs,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			inv.entered = true
			return inv.setupLogging()
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return errs.Usage("give a command: init, run, latest-build-id, sweep, setup, build, latest, serve or manifest (see --help)")
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return errs.Wrap(errs.KindUsage, err, "")
	})
	pf := root.PersistentFlags()
	pf.StringVar(&inv.osCloud, "os-cloud", "", "clouds.yaml cloud to work in (default $OS_CLOUD); needed only by commands that touch a cloud")
	pf.StringVar(&inv.logLevel, "log-level", "info", "log level: debug, info, warning or error (any case), or 10, 20, 30, 40")
	pf.StringVar(&inv.logFormat, "log-format", "text", "log format on stderr and --log-file: text or json")
	pf.StringVar(&inv.logFile, "log-file", "", "also append logs to this file (made 0600; a symlink is refused)")

	root.AddCommand(inv.initCommand(), inv.runCommand(), inv.latestCommand(), inv.sweepCommand())
	root.AddCommand(inv.setupCommand(), inv.buildCommand(), inv.latestImagesCommand(), inv.serveCommand())
	root.AddCommand(inv.manifestCommand())
	return root
}

// exactlyOne is cobra.ExactArgs(1) with a usage error that names the argument.
func exactlyOne(name string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != 1 {
			return errs.Usage("%s: give exactly one %s argument (got %d)", cmd.Name(), name, len(args))
		}
		return nil
	}
}

func notImplemented(what string) error {
	return errs.New(errs.KindInternal, "%s is not implemented yet in this build", what)
}

// Format is how a command prints its results on stdout.
type Format string

// The output formats.
const (
	FormatText Format = "text"
	FormatJSON Format = "json"
)

// ParseFormat accepts text or json (case-insensitive).
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(strings.TrimSpace(s))); f {
	case FormatText, FormatJSON:
		return f, nil
	}
	return "", errs.Usage("--format %q: use text or json", s)
}
