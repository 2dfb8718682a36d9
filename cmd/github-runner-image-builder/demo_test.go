package main

// The demo's own verdict: demo/inspect.sh, which demo/run.sh runs on the
// image it built, must fail the demo when the image does not show that the
// script saw the secret, or shows the secret itself.

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestInspectVerdict runs demo/inspect.sh on small qcow2 disks shaped like
// the demo's output (an MBR, one ext4 partition with /etc/runner-image),
// made without root and without booting anything.
func TestInspectVerdict(t *testing.T) {
	for _, tool := range []string{"bash", "qemu-img", "sfdisk", "python3", "debugfs", "mkfs.ext4", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is needed: %v", tool, err)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	const secret = "demo-secret-Zm9vYmFy"
	digest := func(s string) string { sum := sha256.Sum256([]byte(s)); return hex.EncodeToString(sum[:]) + "\n" }
	tests := []struct {
		name     string
		token    string // /etc/runner-image/token.sha256; "" leaves it out
		extra    string // another file's content
		stdin    string
		wantCode int
		want     string // in stdout (success) or stderr (failure)
	}{
		{"digest matches", digest(secret), "", secret, 0, "the secret itself is nowhere on the disk"},
		{"digest of another secret", digest("something else"), "", secret, 1, "demo: FAILED: /etc/runner-image/token.sha256"},
		{"no digest file", "", "", secret, 1, "did not see the secret"},
		{"secret on the disk", digest(secret), "leaked " + secret + "\n", secret, 1, "demo: FAILED: the secret is in the image"},
		{"no secret given", digest(secret), "", "", 1, "no secret on stdin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := demoImage(t, tt.token, tt.extra)
			cmd := exec.Command("bash", filepath.Join("..", "..", "demo", "inspect.sh"), img)
			cmd.Stdin = strings.NewReader(tt.stdin)
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			out := stdout.String()
			if tt.wantCode != 0 {
				out = stderr.String()
			}
			if code != tt.wantCode || !strings.Contains(out, tt.want) {
				t.Errorf("exit %d, want %d with %q\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, tt.want, stdout.String(), stderr.String())
			}
			if code == 0 && strings.Contains(stderr.String(), "FAILED") {
				t.Errorf("exit 0 but stderr says FAILED:\n%s", stderr.String())
			}
		})
	}
}

// demoImage makes a qcow2 disk whose first partition holds
// /etc/runner-image/{recipe,script,built-at} and, if set, token.sha256 and
// /var/lib/extra.
func demoImage(t *testing.T, token, extra string) string {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	files := map[string]string{
		"etc/runner-image/recipe":   "demo\n",
		"etc/runner-image/script":   "demo script ran\n",
		"etc/runner-image/built-at": "2026-01-01T00:00:00Z\n",
	}
	if token != "" {
		files["etc/runner-image/token.sha256"] = token
	}
	if extra != "" {
		files["var/lib/extra"] = extra
	}
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fs := filepath.Join(dir, "root.ext4")
	raw := filepath.Join(dir, "disk.raw")
	runCmd(t, "", "truncate", "-s", "8M", fs)
	runCmd(t, "", "mkfs.ext4", "-q", "-F", "-d", root, fs)
	runCmd(t, "", "truncate", "-s", "9M", raw)
	runCmd(t, "label: dos\nstart=2048, type=83\n", "sfdisk", "-q", raw)
	runCmd(t, "", "dd", "if="+fs, "of="+raw, "bs=1M", "seek=1", "conv=notrunc", "status=none")
	img := filepath.Join(dir, "image.qcow2")
	runCmd(t, "", "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, img)
	return img
}

func runCmd(t *testing.T, stdin, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}
