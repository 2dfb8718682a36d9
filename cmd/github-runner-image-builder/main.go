// Command github-runner-image-builder builds GitHub Actions runner VM images
// for OpenStack. See the README for commands and exit codes.
//
// main only wires the parts: the builders (internal/builder) into the one
// build path (internal/build), and that into the command line
// (internal/cli), which also drives the builder host (internal/service).
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/runner-image-builder/github-runner-image-builder/internal/build"
	"github.com/runner-image-builder/github-runner-image-builder/internal/builder"
	"github.com/runner-image-builder/github-runner-image-builder/internal/cli"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
)

func main() {
	// SIGINT/SIGTERM cancel the root context: every wait returns, cleanups
	// run, and the exit code is 130.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ledger := &builder.Ledger{}
	go exitOnSecondSignal(ctx, os.Args[1:], ledger.Left)
	// Progress lines go to stderr when it is a terminal; the CLI then keeps
	// the log's info records off it during local builds (cli.App.Terminal).
	tty := builder.Terminal(os.Stderr)
	app := &cli.App{
		Stdout:   os.Stdout,
		Stderr:   os.Stderr,
		Environ:  os.Environ(),
		Backend:  Backend(version(), tty, ledger.Observe),
		Terminal: tty != nil,
	}
	code := app.Main(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

// Backend wires the builders to the command line: the openstack builder
// (recording version on its images) and the local one, both printing
// their phases to progress (a terminal, or none when nil), and observe for every build's
// events (the ledger of what is left).
func Backend(version string, progress io.Writer, observe build.Observer) cli.Backend {
	// One AuthCache for the process: the cells of a matrix (and serve's
	// scheduled builds) authenticate once per cloud every few minutes.
	ob := &builder.OpenStack{Version: version, Auth: &openstack.AuthCache{}, Progress: progress}
	local := builder.NewLocal(ob, progress)
	return cli.Backend{
		Builds: &build.Builds{OpenStack: ob, Local: local, Observe: observe},
		Init: func(ctx context.Context, log *slog.Logger, spec config.InitSpec) error {
			if spec.Builder == config.BuilderLocal {
				return local.Init(ctx, log, spec)
			}
			return ob.Init(ctx, log, spec)
		},
		LatestBuildID: ob.LatestBuildID,
		Sweep:         ob.Sweep,
	}
}

// exitOnSecondSignal waits for the first signal (ctx ends) and then for a
// second one: an operator who presses Ctrl-C again does not want to wait for
// the cleanups, so the process exits 130 at once, saying what may be left and
// how to remove it (left lists what the builds recorded and did not remove).
func exitOnSecondSignal(ctx context.Context, args []string, left func() []string) {
	again := make(chan os.Signal, 1)
	<-ctx.Done()
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	<-again
	fmt.Fprintln(os.Stderr, cli.SecondInterruptMessage(args, os.Environ(), left()))
	os.Exit(130)
}

// version is this binary's version as the Go toolchain recorded it: the
// module version, or "devel" plus the VCS revision of a source build.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		v = "devel"
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += "-" + s.Value[:12]
			}
		}
	}
	return v
}
