package provision

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// shellGuest is a fake guest that runs commands for real in a sandbox
// directory, which also stands in for /run.
func shellGuest(t *testing.T) (*fakeGuest, *Guest, string) {
	t.Helper()
	sandbox := t.TempDir()
	f := startFakeGuest(t, runShell(sandbox))
	g := f.dial(t)
	g.tmpBase = sandbox
	return f, g, sandbox
}

func leftoverTempDirs(t *testing.T, sandbox string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(sandbox, "grib.*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRunScriptSecretsTravelOnStdinOnly(t *testing.T) {
	f, g, sandbox := shellGuest(t)
	secrets := map[string]string{
		"GH_TOKEN": "ghp_s3cr3tTokenValue",
		"MULTI":    "two\nlines with 'quotes' and $dollars\n\n", // trailing newlines survive
	}
	script := `#!/bin/bash
set -eu
echo "token is $GH_TOKEN"
echo "to stderr: $GH_TOKEN" >&2
printf '%s' "$MULTI" | sha256sum | cut -d' ' -f1 > multi.sha
echo "stdin bytes: $(wc -c)"
echo "mode: $(stat -c %a "$0") $(stat -c %a "$(dirname "$0")")"
`
	var out strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := g.RunScript(ctx, []byte(script), secrets, &out); err != nil {
		t.Fatal(err)
	}

	// The script saw the values, byte for byte.
	sum := sha256.Sum256([]byte(secrets["MULTI"]))
	got, err := os.ReadFile(filepath.Join(sandbox, "multi.sha"))
	if err != nil || strings.TrimSpace(string(got)) != hex.EncodeToString(sum[:]) {
		t.Errorf("script saw MULTI with sha256 %q, want %x (%v)", got, sum, err)
	}
	// Its output is redacted, its stdin empty, its files root-only.
	for _, want := range []string{"token is [REDACTED]", "to stderr: [REDACTED]", "stdin bytes: 0", "mode: 700 700"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output %q lacks %q", out.String(), want)
		}
	}
	// No secret, plain or encoded, on any command line; no env requests;
	// the encoded values on the run command's stdin only.
	var onStdin bool
	for _, rec := range f.records() {
		for _, v := range secrets {
			enc := base64.StdEncoding.EncodeToString([]byte(v))
			if strings.Contains(rec.Cmd, v) || strings.Contains(rec.Cmd, enc) || strings.Contains(rec.Cmd, strings.TrimSpace(v)) {
				t.Errorf("secret on the command line %q", rec.Cmd)
			}
			if strings.Contains(string(rec.Stdin), v) {
				t.Errorf("secret in clear on stdin of %q", rec.Cmd)
			}
			if strings.Contains(string(rec.Stdin), enc) {
				onStdin = true
			}
		}
	}
	if !onStdin {
		t.Error("the secrets never reached the guest's stdin")
	}
	if envs := f.envs(); len(envs) != 0 {
		t.Errorf("env requests %q, want none", envs)
	}
	if left := leftoverTempDirs(t, sandbox); len(left) != 0 {
		t.Errorf("temporary directories left: %v", left)
	}
	for _, cmd := range f.commands() {
		if !strings.HasPrefix(cmd, "sudo -n ") {
			t.Errorf("command not run as root: %q", cmd)
		}
	}
}

func TestRunScriptFailureIsRedactedBuildError(t *testing.T) {
	_, g, sandbox := shellGuest(t)
	secrets := map[string]string{"PW": "hunter2-very-secret"}
	var out strings.Builder
	err := g.RunScript(context.Background(), []byte("#!/bin/sh\necho \"using $PW\"\necho 'apt failed' >&2\nexit 3\n"), secrets, &out)
	if !errs.Is(err, errs.KindBuild) {
		t.Fatalf("got %v, want a build error", err)
	}
	var fail *Failure
	if !errors.As(err, &fail) || !strings.Contains(fail.What, "exited with status 3") {
		t.Fatalf("failure %+v", fail)
	}
	if !strings.Contains(fail.Tail, "using [REDACTED]") || !strings.Contains(fail.Tail, "apt failed") {
		t.Errorf("tail %q lacks the redacted output", fail.Tail)
	}
	if strings.Contains(err.Error()+out.String(), secrets["PW"]) {
		t.Error("the secret leaked into the error or the output")
	}
	if left := leftoverTempDirs(t, sandbox); len(left) != 0 {
		t.Errorf("temporary directories left after a failure: %v", left)
	}
}

func TestRunScriptWithoutShebang(t *testing.T) {
	_, g, _ := shellGuest(t)
	var out strings.Builder
	if err := g.RunScript(context.Background(), []byte("echo plain $X\n"), map[string]string{"X": "x"}, &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != "plain [REDACTED]\n" {
		t.Errorf("output %q", out.String())
	}
}

func TestRunScriptDeadline(t *testing.T) {
	_, g, sandbox := shellGuest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := g.RunScript(ctx, []byte("#!/bin/sh\necho started\nexec sleep 60\n"), nil, nil)
	if !errs.Is(err, errs.KindBuild) || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("got %v, want a build error about the deadline", err)
	}
	if left := leftoverTempDirs(t, sandbox); len(left) != 0 {
		t.Errorf("temporary directories left after a timeout: %v", left)
	}
}

func TestRunScriptRejectsBadSecretNames(t *testing.T) {
	f, g, _ := shellGuest(t)
	for _, secrets := range []map[string]string{
		{"1ABC": "v"}, {"A-B": "v"}, {"A B": "v"}, {"": "v"}, {"OK": "nul\x00byte"},
	} {
		err := g.RunScript(context.Background(), []byte("true"), secrets, nil)
		if !errs.Is(err, errs.KindUsage) {
			t.Errorf("secrets %q: got %v, want a usage error", secrets, err)
		}
		if strings.Contains(err.Error(), "nul\x00byte") {
			t.Errorf("the error shows the value: %v", err)
		}
	}
	if n := len(f.commands()); n != 0 {
		t.Errorf("%d commands ran on the guest, want none", n)
	}
}

func TestEncodeSecrets(t *testing.T) {
	got, err := encodeSecrets(map[string]string{"B": "two\n", "A": "one", "E": ""})
	if err != nil {
		t.Fatal(err)
	}
	want := "A b25l\nB dHdvCg==\nE \n"
	if string(got) != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestInterpreter(t *testing.T) {
	tests := []struct {
		script string
		want   []string
	}{
		{"#!/bin/bash\necho hi\n", []string{"/bin/bash"}},
		{"#! /usr/bin/env bash\n", []string{"/usr/bin/env", "bash"}},
		{"#!/bin/sh -eu \n", []string{"/bin/sh", "-eu"}},
		{"#!/usr/bin/env -S bash -e\n", []string{"/usr/bin/env", "-S bash -e"}},
		{"#!\tpython3\t-u\n", []string{"python3", "-u"}},
		{"#!\n", []string{"/bin/sh"}},
		{"echo no shebang\n", []string{"/bin/sh"}},
		{"", []string{"/bin/sh"}},
		{" #!/bin/bash\n", []string{"/bin/sh"}},
	}
	for _, tt := range tests {
		if got := interpreter([]byte(tt.script)); !slices.Equal(got, tt.want) {
			t.Errorf("interpreter(%q) = %q, want %q", tt.script, got, tt.want)
		}
	}
}

func FuzzInterpreter(f *testing.F) {
	f.Add([]byte("#!/usr/bin/env bash\nset -e\n"))
	f.Add([]byte("#!/bin/sh -e\n"))
	f.Add([]byte("echo hi"))
	f.Fuzz(func(t *testing.T, script []byte) {
		argv := interpreter(script)
		if len(argv) < 1 || len(argv) > 2 || argv[0] == "" {
			t.Fatalf("interpreter(%q) = %q", script, argv)
		}
		for _, a := range argv {
			if strings.ContainsAny(a, "\n") || a != strings.Trim(a, " \t") {
				t.Fatalf("argument %q holds a newline or outer blanks", a)
			}
		}
	})
}

// The script runs through the interpreter of its #! line, with its argument,
// so it needs no exec permission on /run.
func TestRunScriptUsesItsInterpreter(t *testing.T) {
	_, g, _ := shellGuest(t)
	var out strings.Builder
	script := "#!/usr/bin/env bash\necho \"bash $BASH_VERSINFO as $0\"\n"
	if err := g.RunScript(context.Background(), []byte(script), nil, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "bash ") || !strings.Contains(out.String(), "/script") {
		t.Errorf("output %q", out.String())
	}
	out.Reset()
	if err := g.RunScript(context.Background(), []byte("#!/bin/sh -e\nfalse\necho not reached\n"), nil, &out); !errs.Is(err, errs.KindBuild) {
		t.Fatalf("got %v; the -e of the #! line was lost", err)
	}
	if strings.Contains(out.String(), "not reached") {
		t.Errorf("output %q", out.String())
	}
}
