package errs

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// The exit codes are a public contract (README, callers' scripts): this
// table is the contract written down, so a renumbering fails here.
func TestExitCodesAreStable(t *testing.T) {
	want := map[Kind]int{
		KindInternal: 1, KindUsage: 2, KindUnreachable: 3, KindAuth: 4, KindNotFound: 5,
		KindBuild: 6, KindVerify: 7, KindPublish: 8, KindLocked: 9, KindPartial: 10,
		KindCallback: 11, KindInterrupted: 130,
	}
	if len(Kinds()) != len(want) {
		t.Fatalf("Kinds() lists %d kinds, the contract %d", len(Kinds()), len(want))
	}
	seenCode := map[int]Kind{}
	seenName := map[string]Kind{}
	for _, k := range Kinds() {
		if got := k.ExitCode(); got != want[k] {
			t.Errorf("%s exits %d, want %d", k, got, want[k])
		}
		if other, dup := seenCode[k.ExitCode()]; dup {
			t.Errorf("%s and %s share exit code %d", k, other, k.ExitCode())
		}
		if other, dup := seenName[k.String()]; dup {
			t.Errorf("%v and %v share the name %q", int(k), int(other), k.String())
		}
		seenCode[k.ExitCode()], seenName[k.String()] = k, k
	}
}

func TestKindOf(t *testing.T) {
	cause := errors.New("connection refused")
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, 0},
		{"plain error", cause, 1},
		{"classified", Wrap(KindUnreachable, cause, "cloud %q", "a"), 3},
		{"wrapped by fmt", fmt.Errorf("init: %w", New(KindAuth, "cloud a refused the password")), 4},
		{"outermost kind wins", Wrap(KindPublish, Wrap(KindUnreachable, cause, "glance"), "copy to b"), 8},
		{"bare cancellation is an interrupt", fmt.Errorf("wait: %w", context.Canceled), 130},
		{"classified cancellation keeps its kind", Wrap(KindBuild, context.Canceled, "boot"), 6},
		{"deadline is not an interrupt", context.DeadlineExceeded, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ExitCode(tt.err); got != tt.want {
				t.Errorf("ExitCode(%v) = %d, want %d", tt.err, got, tt.want)
			}
		})
	}
}

func TestErrorText(t *testing.T) {
	cause := errors.New("503 Service Unavailable")
	tests := []struct {
		err  error
		want string
	}{
		{New(KindUsage, "--arch %q: use x64", "sparc"), `--arch "sparc": use x64`},
		{Wrap(KindPublish, cause, "copy image to cloud %s", "b"), "copy image to cloud b: 503 Service Unavailable"},
		{Wrap(KindUnreachable, cause, ""), "503 Service Unavailable"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	if Wrap(KindBuild, nil, "x") != nil {
		t.Error("Wrap(nil) must be nil so that callers can wrap unconditionally")
	}
	if !errors.Is(Wrap(KindPublish, cause, "copy"), cause) {
		t.Error("Wrap must keep the cause reachable with errors.Is")
	}
	if !Is(Usage("x"), KindUsage) || Is(nil, KindInternal) {
		t.Error("Is misclassifies")
	}
}
