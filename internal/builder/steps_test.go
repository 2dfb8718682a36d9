package builder

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

type recorder struct{ events []string }

func (r *recorder) step(name string, runErr error) Step {
	return Step{
		Name: name,
		Run: func(ctx context.Context) error {
			r.events = append(r.events, "run "+name)
			return runErr
		},
		Cleanup: func(ctx context.Context, failed bool) error {
			if failed {
				r.events = append(r.events, "cleanup-failed "+name)
			} else {
				r.events = append(r.events, "cleanup "+name)
			}
			return nil
		},
	}
}

func TestRunnerCleansUpInReverse(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name   string
		steps  func(r *recorder) []Step
		want   []string
		wantOK bool
	}{
		{
			name:   "success",
			steps:  func(r *recorder) []Step { return []Step{r.step("a", nil), r.step("b", nil)} },
			want:   []string{"run a", "run b", "cleanup b", "cleanup a"},
			wantOK: true,
		},
		{
			name: "failure stops and cleans up what started, failed=true",
			steps: func(r *recorder) []Step {
				return []Step{r.step("a", nil), r.step("b", boom), r.step("c", nil)}
			},
			want: []string{"run a", "run b", "cleanup-failed b", "cleanup-failed a"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			err := (&Runner{}).Run(context.Background(), tc.steps(rec))
			if (err == nil) != tc.wantOK {
				t.Fatalf("err = %v, want ok=%v", err, tc.wantOK)
			}
			if !reflect.DeepEqual(rec.events, tc.want) {
				t.Fatalf("events = %q, want %q", rec.events, tc.want)
			}
			if !tc.wantOK && !errors.Is(err, boom) {
				t.Fatalf("error %v does not wrap the step error", err)
			}
		})
	}
}

func TestRunnerInterruptStillCleansUpWithLiveContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var cleanupCtxErr error
	cleaned := false
	steps := []Step{{
		Name: "wait",
		Run: func(ctx context.Context) error {
			cancel() // Ctrl-C arrives while the step waits
			<-ctx.Done()
			return ctx.Err()
		},
		Cleanup: func(ctx context.Context, failed bool) error {
			cleaned = failed
			cleanupCtxErr = ctx.Err()
			return nil
		},
	}}
	err := (&Runner{}).Run(ctx, steps)
	if got := errs.KindOf(err); got != errs.KindInterrupted {
		t.Fatalf("kind = %v, want interrupted (err %v)", got, err)
	}
	if !cleaned {
		t.Fatal("cleanup did not run with failed=true")
	}
	if cleanupCtxErr != nil {
		t.Fatalf("cleanup context already done: %v", cleanupCtxErr)
	}
}

func TestRunnerStepDeadlineNamesFlag(t *testing.T) {
	steps := []Step{{
		Name:        "ssh",
		Timeout:     10 * time.Millisecond,
		TimeoutFlag: "--ssh-timeout",
		Run: func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		},
	}}
	err := (&Runner{}).Run(context.Background(), steps)
	if errs.KindOf(err) != errs.KindBuild {
		t.Fatalf("kind = %v, want build (err %v)", errs.KindOf(err), err)
	}
	for _, want := range []string{"ssh", "--ssh-timeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not mention %q", err, want)
		}
	}
}

func TestRunnerReportsFailedCleanupAsLeftover(t *testing.T) {
	leak := errors.New("server still there")
	steps := []Step{{
		Name:    "server",
		Run:     func(context.Context) error { return nil },
		Cleanup: func(context.Context, bool) error { return leak },
	}}
	err := (&Runner{}).Run(context.Background(), steps)
	var re *RunError
	if !errors.As(err, &re) || len(re.Leftovers) != 1 || re.Leftovers[0].Step != "server" {
		t.Fatalf("err = %#v, want one leftover for step server", err)
	}
	if !errors.Is(err, leak) {
		t.Fatalf("error does not wrap the cleanup failure")
	}
}
