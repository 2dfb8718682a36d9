// Command github-runner-image-builder builds GitHub Actions runner VM images
// for OpenStack. See the README for commands and exit codes.
package main

import (
	"context"
	"fmt"
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
	ledger := &builder.Ledger{}
	backend.OpenStack.Ledger = ledger
	go exitOnSecondSignal(ctx, os.Args[1:], ledger.Left)
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
