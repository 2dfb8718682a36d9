package cli

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestLogFileOpen checks what --log-file does to the path it is given: a
// new file is created 0600; an existing file keeps its content, gets the
// run's logs appended and is made 0600 whatever its mode was; a symbolic
// link (to a file or to nothing) and a named pipe are refused with one
// Error: line, exit 2, and the link's target is left as it was.
func TestLogFileOpen(t *testing.T) {
	const old = "an earlier run\n"
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string) string // makes the path to pass
		wantErr string                                // "" for success
		check   func(t *testing.T, dir, path string)
	}{
		{name: "new file is 0600", setup: func(t *testing.T, dir string) string { return filepath.Join(dir, "new.log") },
			check: func(t *testing.T, _, path string) { checkModeContent(t, path, 0o600, "", true) }},
		{name: "existing 0644 file becomes 0600, appended", setup: func(t *testing.T, dir string) string {
			return writeMode(t, filepath.Join(dir, "old.log"), old, 0o644)
		}, check: func(t *testing.T, _, path string) { checkModeContent(t, path, 0o600, old, true) }},
		{name: "existing 0666 file becomes 0600", setup: func(t *testing.T, dir string) string {
			return writeMode(t, filepath.Join(dir, "open.log"), old, 0o666)
		}, check: func(t *testing.T, _, path string) { checkModeContent(t, path, 0o600, old, true) }},
		{name: "symlink to a file refused, target untouched", setup: func(t *testing.T, dir string) string {
			target := writeMode(t, filepath.Join(dir, "target"), old, 0o644)
			return symlink(t, target, filepath.Join(dir, "link.log"))
		}, wantErr: "is a symbolic link", check: func(t *testing.T, dir, _ string) {
			checkModeContent(t, filepath.Join(dir, "target"), 0o644, old, false)
		}},
		{name: "dangling symlink refused, target not created", setup: func(t *testing.T, dir string) string {
			return symlink(t, filepath.Join(dir, "absent"), filepath.Join(dir, "link.log"))
		}, wantErr: "is a symbolic link", check: func(t *testing.T, dir, _ string) {
			if _, err := os.Lstat(filepath.Join(dir, "absent")); !os.IsNotExist(err) {
				t.Errorf("the link's target was created (%v)", err)
			}
		}},
		{name: "named pipe refused without hanging", setup: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "fifo")
			if err := syscall.Mkfifo(p, 0o644); err != nil {
				t.Skipf("mkfifo: %v", err)
			}
			return p
		}, wantErr: "--log-file", check: func(t *testing.T, _, path string) {
			if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o644 {
				t.Errorf("the pipe's mode changed: %v %v", st.Mode(), err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := tt.setup(t, dir)
			r := runApp(t, testEnv(), Backend{}, pinned("--log-file", path, "run", "x", "--arch", "x64", "--dry-run")...)
			if tt.wantErr != "" {
				checkUsage(t, r, tt.wantErr)
			} else if r.code != 0 {
				t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
			}
			tt.check(t, dir, path)
		})
	}
}

// writeMode writes body to path and sets its mode (past the umask).
func writeMode(t *testing.T, path, body string, mode os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func symlink(t *testing.T, target, link string) string {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	return link
}

// checkModeContent checks path's mode, that it starts with prefix and
// whether the run's logs were appended after it.
func checkModeContent(t *testing.T, path string, mode os.FileMode, prefix string, logged bool) {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != mode || !st.Mode().IsRegular() {
		t.Errorf("%s: mode %v, want a regular file %v", path, st.Mode(), mode)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), prefix) {
		t.Errorf("%s lost its content: %q", path, data)
	}
	if got := strings.Contains(string(data), "runner release pinned"); got != logged {
		t.Errorf("%s has the run's logs: %v, want %v:\n%s", path, got, logged, data)
	}
}
