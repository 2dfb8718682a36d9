package cli_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBinaryExitCodes builds the real binary once and checks its exit codes
// and stream discipline end to end (main's wiring of Main, os.Exit, stderr).
func TestBinaryExitCodes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "github-runner-image-builder")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "../../cmd/github-runner-image-builder")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	sha := strings.Repeat("ab", 32)
	tests := []struct {
		name      string
		args      []string
		code      int
		stdoutHas string
		stderrHas string
	}{
		{"help", []string{"--help"}, 0, "Exit codes:", ""},
		{"dry run", []string{"--log-level", "error", "run", "x", "--arch", "x64", "--runner-version", "2.330.0",
			"--runner-sha256", sha, "--runner-api-url", "http://127.0.0.1:9", "--dry-run"}, 0, "#!/bin/bash", ""},
		{"usage", []string{"run", "x", "--arch", "x64", "-k", "0"}, 2, "", "Error: --keep-revisions 0"},
		{"unknown flag", []string{"--nope"}, 2, "", "Error: unknown flag: --nope"},
		{"wired to the openstack builder", []string{"--os-cloud", "c", "latest-build-id", "x"}, 2, "", `Error: no clouds.yaml found for cloud "c"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), bin, tt.args...)
			cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				code = exit.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.code || !strings.Contains(stdout.String(), tt.stdoutHas) || !strings.Contains(stderr.String(), tt.stderrHas) {
				t.Errorf("exit %d (want %d)\nstdout %.200q\nstderr %q", code, tt.code, stdout.String(), stderr.String())
			}
			if tt.code != 0 && (stdout.Len() != 0 || strings.Count(stderr.String(), "\n") != 1) {
				t.Errorf("a failure must print nothing on stdout and one line on stderr: %q / %q", stdout.String(), stderr.String())
			}
		})
	}
}
