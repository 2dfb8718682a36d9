// Command github-runner-image-builder builds GitHub Actions runner VM images
// for OpenStack. See the README for commands and exit codes.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/runner-image-builder/github-runner-image-builder/internal/builder"
	"github.com/runner-image-builder/github-runner-image-builder/internal/cli"
)

func main() {
	// SIGINT/SIGTERM cancel the root context: every wait returns, cleanups
	// run, and the exit code is 130.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	backend := builder.NewBackend(builder.Version())
	// --builder local: qemu on this host; progress lines when stderr is a terminal.
	local := builder.NewLocal(backend.OpenStack, builder.Terminal(os.Stderr))
	backend.LocalInit, backend.LocalRun = local.Init, local.Run
	app := &cli.App{
		Stdout:  os.Stdout,
		Stderr:  os.Stderr,
		Environ: os.Environ(),
		Backend: backend.CLI(),
	}
	code := app.Main(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
