package cli

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/release"
)

// TestTerminalRule: on a terminal (App.Terminal, which main sets when it
// gives the local builder stderr for progress lines) a local build or
// init keeps the log's info records off stderr, leaving its warnings and
// errors there; --log-file still gets every record at --log-level, and
// --log-level debug keeps them on stderr. Off a terminal, and for the
// openstack builder (no progress lines), stderr gets the log at
// --log-level as before.
func TestTerminalRule(t *testing.T) {
	const info, warn = "an info record", "a warning record"
	logBoth := func(log *slog.Logger) {
		log.Info(info)
		log.Warn(warn)
	}
	backend := Backend{
		Builds: fakeBuilds(func(_ context.Context, log *slog.Logger, spec config.RunSpec, _ release.Release, _ []byte) ([]config.PublishedImage, error) {
			logBoth(log)
			return []config.PublishedImage{{Cloud: "c", ID: "id-1"}}, nil
		}),
		Init: func(_ context.Context, log *slog.Logger, _ config.InitSpec) error { logBoth(log); return nil },
	}
	local := pinned("run", "img", "--arch", "x64", "--builder", "local", "--output", "/tmp/out.qcow2", "--upload-clouds", "c")
	openstack := pinned("run", "img", "--arch", "x64", "--upload-clouds", "c")
	initLocal := []string{"init", "--arch", "x64", "--builder", "local", "--cache-dir", "/c"}
	tests := []struct {
		name       string
		terminal   bool
		args       []string
		stderrInfo bool
		stderrWarn bool
	}{
		{"not a terminal, local", false, local, true, true},
		{"not a terminal, openstack", false, openstack, true, true},
		{"terminal, local", true, local, false, true},
		{"terminal, local, json", true, append([]string{"--log-format", "json"}, local...), false, true},
		{"terminal, local, debug", true, append([]string{"--log-level", "debug"}, local...), true, true},
		{"terminal, local, error", true, append([]string{"--log-level", "error"}, local...), false, false},
		{"terminal, openstack", true, openstack, false, true},
		{"terminal, openstack, debug", true, append([]string{"--log-level", "debug"}, openstack...), true, true},
		{"terminal, init local", true, initLocal, false, true},
		{"not a terminal, init local", false, initLocal, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logFile := filepath.Join(t.TempDir(), "grib.log")
			args := append([]string{"--os-cloud", "c", "--log-file", logFile}, tt.args...)
			var out, errOut bytes.Buffer
			app := &App{Stdout: &out, Stderr: &errOut, Environ: testEnv(), Backend: backend, GOARCH: "amd64", Terminal: tt.terminal}
			if code := app.Main(t.Context(), args); code != 0 {
				t.Fatalf("exit %d: %s", code, errOut.String())
			}
			stderr := errOut.String()
			if got := strings.Contains(stderr, info); got != tt.stderrInfo {
				t.Errorf("info record on stderr: %v, want %v\nstderr:\n%s", got, tt.stderrInfo, stderr)
			}
			if got := strings.Contains(stderr, warn); got != tt.stderrWarn {
				t.Errorf("warning on stderr: %v, want %v\nstderr:\n%s", got, tt.stderrWarn, stderr)
			}
			data, err := os.ReadFile(logFile)
			if err != nil {
				t.Fatal(err)
			}
			// The file gets the log at --log-level, whatever the terminal.
			wantFileInfo := !strings.Contains(strings.Join(tt.args, " "), "--log-level error")
			if got := strings.Contains(string(data), info); got != wantFileInfo {
				t.Errorf("info record in --log-file: %v, want %v\n%s", got, wantFileInfo, data)
			}
			if got := strings.Contains(string(data), warn); got != tt.stderrWarn {
				t.Errorf("warning in --log-file: %v, want %v\n%s", got, tt.stderrWarn, data)
			}
		})
	}
}
