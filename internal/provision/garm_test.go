package provision

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunnerUserCheck runs the "runner user" check's command in sh against
// a fake id and a runner directory in a temporary tree: it passes only when
// runner is ubuntu's alias (same UID) and the directory GARM looks in holds
// the runner, and otherwise says what is wrong.
func TestRunnerUserCheck(t *testing.T) {
	bin := t.TempDir()
	fakeID := `#!/bin/sh
# id USER | id -u USER, with runner's UID from $RUNNER_UID (empty: no such user)
u=""; [ "$1" = -u ] && { u=1; shift; }
case "$1" in
ubuntu) uid=1000 ;;
runner) uid="$RUNNER_UID" ;;
esac
[ -n "$uid" ] || { echo "id: '$1': no such user" >&2; exit 1; }
if [ -n "$u" ]; then echo "$uid"; else echo "uid=$uid($1)"; fi
`
	if err := os.WriteFile(filepath.Join(bin, "id"), []byte(fakeID), 0o755); err != nil {
		t.Fatal(err)
	}
	withRunner := filepath.Join(t.TempDir(), "actions-runner")
	if err := os.MkdirAll(withRunner, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(withRunner, "config.sh"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	tests := []struct {
		name      string
		runnerUID string
		dir       string
		wantOK    bool
		wantOut   string
	}{
		{"alias with runner", "1000", withRunner, true, ""},
		{"no runner user", "", withRunner, false, "no such user"},
		{"runner is another user", "1001", withRunner, false, "is not an alias of ubuntu"},
		{"no runner in the directory", "1000", empty, false, "no runner in " + empty},
		{"no directory", "1000", filepath.Join(empty, "missing"), false, "where GARM looks for it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command("sh", "-c", runnerUserCheck(tt.dir))
			cmd.Env = []string{"PATH=" + bin + ":/usr/bin:/bin", "RUNNER_UID=" + tt.runnerUID}
			out, err := cmd.CombinedOutput()
			if (err == nil) != tt.wantOK || !strings.Contains(string(out), tt.wantOut) {
				t.Errorf("exit %v, output %q; want ok=%v and %q", err, out, tt.wantOK, tt.wantOut)
			}
		})
	}
	// The built-in checks run it on GARM's directory.
	found := false
	for _, c := range DefaultChecks("").List {
		found = found || c.Name == "runner user" && c.Command == runnerUserCheck("/home/runner/actions-runner")
	}
	if !found {
		t.Errorf("DefaultChecks has no runner user check of /home/runner/actions-runner: %+v", DefaultChecks("").List)
	}
}
