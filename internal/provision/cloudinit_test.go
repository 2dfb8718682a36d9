package provision

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

func readCloudInit(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "cloud-init", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseStatusJSON(t *testing.T) {
	tests := []struct {
		file       string
		want       State
		wantErrors int
		wantLevels []string
	}{
		{"status-done.json", StateDone, 0, nil},
		{"status-done-23.1.json", StateDone, 0, nil},
		{"status-degraded.json", StateDegraded, 0, []string{"DEPRECATED", "WARNING"}},
		{"status-error.json", StateError, 1, nil},
		{"status-error-running.json", StateRunning, 1, nil},
		{"status-running.json", StateRunning, 0, nil},
		{"status-disabled.json", StateDisabled, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			st, err := parseStatusJSON(readCloudInit(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if st.State != tt.want || len(st.Errors) != tt.wantErrors {
				t.Errorf("state %q with %d errors, want %q with %d", st.State, len(st.Errors), tt.want, tt.wantErrors)
			}
			var levels []string
			for l := range st.RecoverableErrors {
				levels = append(levels, l)
			}
			slices.Sort(levels)
			if !slices.Equal(levels, tt.wantLevels) {
				t.Errorf("recoverable error levels %v, want %v", levels, tt.wantLevels)
			}
		})
	}
}

func TestParseStatusJSONRejects(t *testing.T) {
	for _, in := range []string{"", "usage: cloud-init status [-h]", "{}", `{"status": "sleeping"}`, `{"status": 3}`, "[]"} {
		if st, err := parseStatusJSON([]byte(in)); err == nil {
			t.Errorf("parseStatusJSON(%q) = %+v, want an error", in, st)
		}
	}
	// Odd but valid shapes are read leniently.
	st, err := parseStatusJSON([]byte(`{"status":"error","errors":[{"module":"x"}],"recoverable_errors":{"WARNING":[]}}`))
	if err != nil || st.State != StateError || st.Errors[0] != `{"module":"x"}` || st.RecoverableErrors != nil {
		t.Errorf("got %+v, %v", st, err)
	}
}

func TestParseStatusFiles(t *testing.T) {
	tests := []struct {
		name     string
		status   string // file name; "" = absent
		result   string
		disabled bool
		want     State
		errors   int
	}{
		{"not started", "", "", false, StateNotStarted, 0},
		{"disabled", "", "", true, StateDisabled, 0},
		{"running", "files-status-running.json", "", false, StateRunning, 0},
		{"done", "files-status.json", "files-result.json", false, StateDone, 0},
		{"error in a stage and the result", "files-status-error.json", "files-result-error.json", false, StateError, 1},
		{"error only in the result", "files-status.json", "files-result-error.json", false, StateError, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var status, result []byte
			if tt.status != "" {
				status = readCloudInit(t, tt.status)
			}
			if tt.result != "" {
				result = readCloudInit(t, tt.result)
			}
			st, err := parseStatusFiles(status, result, tt.disabled)
			if err != nil {
				t.Fatal(err)
			}
			if st.State != tt.want || len(st.Errors) != tt.errors {
				t.Errorf("state %q with errors %q, want %q with %d", st.State, st.Errors, tt.want, tt.errors)
			}
		})
	}
	for _, bad := range [][2]string{{"{", ""}, {`{"v2":{}}`, ""}, {`{"v1":{"init":[]}}`, ""}, {`{"v1":{}}`, "nope"}, {`{"v1":{}}`, `{}`}} {
		if _, err := parseStatusFiles([]byte(bad[0]), []byte(bad[1]), false); err == nil {
			t.Errorf("parseStatusFiles(%q, %q): no error", bad[0], bad[1])
		}
	}
}

func FuzzParseStatusJSON(f *testing.F) {
	for _, name := range []string{"status-done.json", "status-degraded.json", "status-error.json", "status-running.json"} {
		f.Add(readCloudInit(f, name))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := parseStatusJSON(data)
		if err != nil {
			return
		}
		checkStatus(t, st)
	})
}

func FuzzParseStatusFiles(f *testing.F) {
	f.Add(readCloudInit(f, "files-status.json"), readCloudInit(f, "files-result.json"), false)
	f.Add(readCloudInit(f, "files-status-error.json"), []byte(nil), true)
	f.Fuzz(func(t *testing.T, status, result []byte, disabled bool) {
		st, err := parseStatusFiles(status, result, disabled)
		if err != nil {
			return
		}
		checkStatus(t, st)
		if result == nil && st.State.Finished() && st.State != StateDisabled {
			t.Fatalf("finished (%q) without result.json", st.State)
		}
	})
}

// checkStatus holds for every status a parser returns.
func checkStatus(t *testing.T, st Status) {
	t.Helper()
	valid := []State{StateNotStarted, StateRunning, StateDone, StateDegraded, StateError, StateDisabled}
	if !slices.Contains(valid, st.State) {
		t.Fatalf("invalid state %q", st.State)
	}
	if st.State == StateDone && (len(st.Errors) > 0 || len(st.RecoverableErrors) > 0) {
		t.Fatalf("done with errors: %+v", st)
	}
	if st.State == StateDegraded && len(st.Errors) > 0 {
		t.Fatalf("degraded with errors: %+v", st)
	}
}

// sequence answers successive calls of the same command with successive
// answers, repeating the last one.
type sequence struct {
	mu      sync.Mutex
	answers []answer
}

func (s *sequence) next() answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.answers[0]
	if len(s.answers) > 1 {
		s.answers = s.answers[1:]
	}
	return a
}

const tailLogCmd = "sudo -n tail -n 40 -- '/var/log/cloud-init-output.log'"

// cloudInitGuest answers the status command from statuses, and the rest from
// other.
func cloudInitGuest(t *testing.T, statuses []answer, other map[string]answer) *fakeGuest {
	seq := &sequence{answers: statuses}
	rest := scripted(t, other)
	return startFakeGuest(t, func(e *execRequest) int {
		if e.Cmd == cloudInitStatusCmd {
			a := seq.next()
			_, _ = e.Stdout.Write([]byte(a.stdout))
			_, _ = e.Stderr.Write([]byte(a.stderr))
			return a.code
		}
		return rest(e)
	})
}

func TestWaitCloudInit(t *testing.T) {
	running := answer{stdout: string(readCloudInit(t, "status-running.json"))}
	tests := []struct {
		name       string
		final      answer
		want       State
		wantKind   errs.Kind // KindInternal: no error
		wantInMsg  []string
		wantTailed bool
	}{
		{name: "done", final: answer{stdout: string(readCloudInit(t, "status-done.json"))}, want: StateDone},
		{name: "degraded is not an error", final: answer{stdout: string(readCloudInit(t, "status-degraded.json")), code: 2}, want: StateDegraded},
		{name: "error carries the errors and the log tail", final: answer{stdout: string(readCloudInit(t, "status-error.json")), code: 1},
			want: StateError, wantKind: errs.KindBuild, wantTailed: true,
			wantInMsg: []string{"cloud-init failed", "Runparts: 1 failures", "apt-get failed here", "/var/log/cloud-init-output.log"}},
		{name: "disabled", final: answer{stdout: string(readCloudInit(t, "status-disabled.json"))},
			want: StateDisabled, wantKind: errs.KindBuild, wantInMsg: []string{"disabled"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := cloudInitGuest(t, []answer{running, running, tt.final}, map[string]answer{
				tailLogCmd: {stdout: "Reading package lists...\nE: apt-get failed here\n"},
			})
			g := f.dial(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			st, err := g.WaitCloudInit(ctx)
			if st.State != tt.want {
				t.Errorf("state %q, want %q", st.State, tt.want)
			}
			if tt.wantKind == errs.KindInternal {
				if err != nil {
					t.Fatal(err)
				}
			} else if k := errs.KindOf(err); err == nil || k != tt.wantKind {
				t.Fatalf("error %v of kind %v, want %v", err, k, tt.wantKind)
			}
			for _, s := range tt.wantInMsg {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if n := countCmd(f.commands(), cloudInitStatusCmd); n != 3 {
				t.Errorf("status read %d times, want 3", n)
			}
			if tailed := countCmd(f.commands(), tailLogCmd) > 0; tailed != tt.wantTailed {
				t.Errorf("log tail read: %v, want %v", tailed, tt.wantTailed)
			}
		})
	}
}

func countCmd(cmds []string, cmd string) int {
	n := 0
	for _, c := range cmds {
		if c == cmd {
			n++
		}
	}
	return n
}

// Debian 12's cloud-init 22.4 has no --format: read the files instead.
func TestWaitCloudInitFallsBackToFiles(t *testing.T) {
	usage := answer{stderr: "usage: /usr/bin/cloud-init [-h] [--version] ...\n/usr/bin/cloud-init: error: unrecognized arguments: --format json\n", code: 2}
	var mu sync.Mutex
	reads := 0
	readStatus := "if [ -e '/run/cloud-init/status.json' ]; then exec cat -- '/run/cloud-init/status.json'; else exit 44; fi"
	readResult := "if [ -e '/run/cloud-init/result.json' ]; then exec cat -- '/run/cloud-init/result.json'; else exit 44; fi"
	disabledProbe := "test -e /run/cloud-init/disabled || test -e /etc/cloud/cloud-init.disabled"
	f := startFakeGuest(t, func(e *execRequest) int {
		mu.Lock()
		defer mu.Unlock()
		switch e.Cmd {
		case cloudInitStatusCmd:
			_, _ = e.Stderr.Write([]byte(usage.stderr))
			return usage.code
		case readStatus:
			reads++
			switch {
			case reads == 1:
				return 44 // not started yet
			case reads < 3:
				_, _ = e.Stdout.Write(readCloudInit(t, "files-status-running.json"))
			default:
				_, _ = e.Stdout.Write(readCloudInit(t, "files-status.json"))
			}
			return 0
		case readResult:
			if reads < 3 {
				return 44
			}
			_, _ = e.Stdout.Write(readCloudInit(t, "files-result.json"))
			return 0
		case disabledProbe:
			return 1
		}
		t.Errorf("unexpected command %q", e.Cmd)
		return 127
	})
	g := f.dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := g.WaitCloudInit(ctx)
	if err != nil || st.State != StateDone {
		t.Fatalf("got %+v, %v; want done", st, err)
	}
	if n := countCmd(f.commands(), cloudInitStatusCmd); n != 1 {
		t.Errorf("asked `cloud-init status --format json` %d times, want once", n)
	}
	if st.Source != "/run/cloud-init/" {
		t.Errorf("source %q", st.Source)
	}
}

func TestWaitCloudInitDeadline(t *testing.T) {
	running := answer{stdout: string(readCloudInit(t, "status-running.json"))}
	f := cloudInitGuest(t, []answer{running}, map[string]answer{tailLogCmd: {stdout: "still installing\n"}})
	g := f.dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := g.WaitCloudInit(ctx)
	if st.State != StateRunning || !errs.Is(err, errs.KindBuild) {
		t.Fatalf("got %q, %v; want running and a build error", st.State, err)
	}
	var fail *Failure
	if !errors.As(err, &fail) || !strings.Contains(fail.What, "did not finish") || fail.Tail != "still installing" {
		t.Errorf("failure %+v", fail)
	}
}

func TestWaitCloudInitCancel(t *testing.T) {
	running := answer{stdout: string(readCloudInit(t, "status-running.json"))}
	f := cloudInitGuest(t, []answer{running}, nil)
	g := f.dial(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := g.WaitCloudInit(ctx)
	if !errs.Is(err, errs.KindInterrupted) {
		t.Fatalf("got %v, want interrupted", err)
	}
}
