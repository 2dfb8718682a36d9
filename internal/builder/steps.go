package builder

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// Step is one phase of a build, in the spirit of packer's multistep: Run does
// the work, Cleanup undoes whatever Run created. Cleanup runs for every step
// whose Run was started, in reverse order, on success, failure and
// interruption alike, each with its own bounded context that is not cancelled
// by Ctrl-C. failed tells Cleanup whether the build as a whole failed, so a
// step can keep what a successful build produced (the published image) and
// remove it otherwise.
type Step struct {
	Name string
	// Timeout bounds Run; zero means only the parent context bounds it.
	Timeout time.Duration
	// TimeoutFlag names the flag that sets Timeout, for the error message.
	TimeoutFlag string
	Run         func(ctx context.Context) error
	Cleanup     func(ctx context.Context, failed bool) error
}

// Runner runs steps in order and their cleanups in reverse.
type Runner struct {
	Log *slog.Logger
	// CleanupTimeout bounds each cleanup (default 5 minutes).
	CleanupTimeout time.Duration
	// Observe, if set, is told when each step starts and ends: metrics,
	// progress lines and tests read the build through it, never its logs.
	Observe Observer
}

// EventKind says what an Event reports.
type EventKind int

// The events of a build.
const (
	// StepStarted: Step began its Run.
	StepStarted EventKind = iota + 1
	// StepEnded: Step's Run returned after Took, with Err (nil: it succeeded).
	StepEnded
	// Made: the build made What (a server, an unpublished image, a scratch
	// file, a qemu directory) and has not removed it yet.
	Made
	// Removed: the build removed What, or published it (it is meant to stay).
	Removed
)

// Event is one thing a build tells its observers.
type Event struct {
	Kind EventKind
	Step string        // StepStarted, StepEnded
	Took time.Duration // StepEnded
	Err  error         // StepEnded
	What Left          // Made, Removed
}

// Observer receives a build's events as they happen; it must not block.
// A nil Observer ignores them.
type Observer func(Event)

// Emit tells o about ev (a nil o ignores it).
func (o Observer) Emit(ev Event) {
	if o != nil {
		o(ev)
	}
}

// Observers fans events out to every non-nil observer, in order.
func Observers(obs ...Observer) Observer {
	return func(ev Event) {
		for _, o := range obs {
			o.Emit(ev)
		}
	}
}

// Leftover describes a cleanup that failed: something may be left behind.
type Leftover struct {
	Step string
	Err  error
}

// RunError is returned when a build failed or its cleanup left something behind.
type RunError struct {
	Err       error      // the step failure (nil if only cleanup failed)
	Leftovers []Leftover // cleanups that failed
}

func (e *RunError) Error() string {
	msg := ""
	if e.Err != nil {
		msg = e.Err.Error()
	}
	for _, l := range e.Leftovers {
		if msg != "" {
			msg += "; "
		}
		msg += fmt.Sprintf("cleanup of %s failed: %v", l.Step, l.Err)
	}
	return msg
}

func (e *RunError) Unwrap() error {
	if e.Err != nil {
		return e.Err
	}
	if len(e.Leftovers) > 0 {
		return e.Leftovers[0].Err
	}
	return nil
}

// Run executes steps. It returns nil only when every step and every cleanup
// succeeded. A cancelled parent context yields an errs.KindInterrupted error
// (after all cleanups ran); a step that exceeds its own Timeout yields an
// errs.KindBuild error naming the step and its flag.
func (r *Runner) Run(ctx context.Context, steps []Step) error {
	log := r.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var started []Step
	var runErr error
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			runErr = errs.Wrap(errs.KindInterrupted, err, "interrupted before step %s", s.Name)
			break
		}
		started = append(started, s)
		runErr = r.runStep(ctx, log, s)
		if runErr != nil {
			break
		}
	}
	failed := runErr != nil
	var leftovers []Leftover
	for i := len(started) - 1; i >= 0; i-- {
		s := started[i]
		if s.Cleanup == nil {
			continue
		}
		if err := r.cleanupStep(ctx, log, s, failed); err != nil {
			leftovers = append(leftovers, Leftover{Step: s.Name, Err: err})
		}
	}
	if runErr == nil && len(leftovers) == 0 {
		return nil
	}
	return &RunError{Err: runErr, Leftovers: leftovers}
}

func (r *Runner) runStep(ctx context.Context, log *slog.Logger, s Step) error {
	stepCtx, cancel := ctx, context.CancelFunc(func() {})
	if s.Timeout > 0 {
		stepCtx, cancel = context.WithTimeoutCause(ctx, s.Timeout, errStepDeadline)
	}
	defer cancel()
	start := time.Now()
	log.Info("step started", "step", s.Name)
	r.Observe.Emit(Event{Kind: StepStarted, Step: s.Name})
	err := s.Run(stepCtx)
	took := time.Since(start)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		// The parent was cancelled (Ctrl-C, SIGTERM, overall deadline).
		err = errs.Wrap(errs.KindInterrupted, err, "step %s interrupted", s.Name)
	case errors.Is(context.Cause(stepCtx), errStepDeadline):
		hint := ""
		if s.TimeoutFlag != "" {
			hint = fmt.Sprintf(" (raise it with %s)", s.TimeoutFlag)
		}
		err = errs.Wrap(errs.KindBuild, err, "step %s exceeded its deadline of %s%s", s.Name, s.Timeout, hint)
	default:
		err = fmt.Errorf("step %s: %w", s.Name, err)
	}
	r.Observe.Emit(Event{Kind: StepEnded, Step: s.Name, Took: took, Err: err})
	if err != nil {
		log.Error("step failed", "step", s.Name, "took", took.Round(time.Millisecond), "error", err)
	} else {
		log.Info("step done", "step", s.Name, "took", took.Round(time.Millisecond))
	}
	return err
}

var errStepDeadline = errors.New("step deadline exceeded")

func (r *Runner) cleanupStep(ctx context.Context, log *slog.Logger, s Step, failed bool) error {
	timeout := r.CleanupTimeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	// Cleanup must run even after Ctrl-C: detach from the parent's
	// cancellation but keep its values, and bound it on its own.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	err := s.Cleanup(cctx, failed)
	if err != nil {
		log.Error("cleanup failed", "step", s.Name, "error", err)
	} else {
		log.Debug("cleanup done", "step", s.Name)
	}
	return err
}
