// Command github-runner-image-builder builds GitHub Actions runner VM images
// for OpenStack. See the README for commands and exit codes.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/runner-image-builder/github-runner-image-builder/internal/cli"
)

func main() {
	// SIGINT/SIGTERM cancel the root context: every wait returns, cleanups
	// run, and the exit code is 130.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	app := &cli.App{
		Stdout:  os.Stdout,
		Stderr:  os.Stderr,
		Environ: os.Environ(),
		// Backend: the builders are connected here as they land (internal/builder).
	}
	code := app.Main(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
