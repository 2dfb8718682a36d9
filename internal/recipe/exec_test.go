package recipe

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
)

func runnerTarball(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, body := range map[string]string{"config.sh": "#!/bin/sh\necho configured\n", "run.sh": "#!/bin/sh\n"} {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// scriptFunctions renders p and returns the script without its final
// `main "$@"`, with the given readonly assignments replaced, so that a test
// can call single steps against loopback servers and a temporary directory.
func scriptFunctions(t *testing.T, p Params, replace map[string]string) string {
	t.Helper()
	out, err := Render(p)
	if err != nil {
		t.Fatal(err)
	}
	script, ok := strings.CutSuffix(string(out), "\nmain \"$@\"\n")
	if !ok {
		t.Fatal("rendered script does not end with main \"$@\"")
	}
	for name, value := range replace {
		re := regexp.MustCompile(`(?m)^readonly ` + name + `=.*$`)
		if !re.MatchString(script) {
			t.Fatalf("no readonly %s in the script", name)
		}
		script = re.ReplaceAllLiteralString(script, "readonly "+name+"="+shellQuote(value))
	}
	return script
}

// TestStepsVerifyDownloads runs the rendered install_github_runner and
// install_yq steps with real bash, curl and sha*sum against a loopback
// server: a matching checksum installs, a mismatch or a download that keeps
// failing makes the script exit non-zero.
func TestStepsVerifyDownloads(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "tar", "sha256sum", "sha384sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is not installed", tool)
			}
			t.Skipf("%s is not installed", tool)
		}
	}
	tarball := runnerTarball(t)
	fakeYQ := []byte("#!/bin/sh\necho yq fake\n")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /runner.tar.gz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(tarball) })
	mux.HandleFunc("GET /yq", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(fakeYQ) })
	srv := httptest.NewServer(mux) // 127.0.0.1 only
	defer srv.Close()

	tarSum := sha256.Sum256(tarball)
	yqSum := sha512.Sum384(fakeYQ)
	wrong := strings.Repeat("0", 64)

	tests := []struct {
		name     string
		url      string // runner or yq URL
		sha      string
		step     string
		extra    map[string]string
		wantOK   bool
		wantLogs []string
	}{
		{"runner matches", srv.URL + "/runner.tar.gz", hex.EncodeToString(tarSum[:]), "install_github_runner", nil, true,
			[]string{"step: install the runner 2.330.0 (x64)"}},
		{"runner mismatch fails", srv.URL + "/runner.tar.gz", wrong, "install_github_runner", nil, false,
			[]string{"does not match SHA-256", "FAILED"}},
		{"runner download keeps failing", srv.URL + "/missing.tar.gz", hex.EncodeToString(tarSum[:]), "install_github_runner", nil, false,
			[]string{"giving up after 5 attempts", "FAILED"}},
		{"yq mismatch fails", "", "", "install_yq", map[string]string{"YQ_URL": srv.URL + "/yq"}, false,
			[]string{"does not match its pinned SHA-384", "FAILED"}},
		{"yq matches", "", "", "install_yq", map[string]string{"YQ_URL": srv.URL + "/yq", "YQ_SHA384": hex.EncodeToString(yqSum[:])}, true,
			[]string{"step: install yq 4.45.1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := params(config.ArchX64, config.BaseNoble, "")
			if tt.url != "" {
				p.Runner.URL, p.Runner.SHA256 = tt.url, tt.sha
			}
			replace := map[string]string{"RUNNER_DIR": filepath.Join(dir, "actions-runner")}
			for k, v := range tt.extra {
				replace[k] = v
			}
			script := scriptFunctions(t, p, replace)
			// Stubs for what would change this machine, and no real waiting.
			script += "\nchown() { :; }\nsleep() { :; }\n" +
				"install() { cp \"$3\" " + shellQuote(filepath.Join(dir, "installed")) + "; }\n" +
				"yq() { echo yq stub; }\n" + tt.step + "\n"
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "bash", "-s")
			cmd.Stdin = strings.NewReader(script)
			cmd.Env = append(os.Environ(), "TMPDIR="+dir)
			out, err := cmd.CombinedOutput()
			if (err == nil) != tt.wantOK {
				t.Fatalf("script error = %v, want ok=%v; output:\n%s", err, tt.wantOK, out)
			}
			for _, l := range tt.wantLogs {
				if !strings.Contains(string(out), l) {
					t.Errorf("output lacks %q:\n%s", l, out)
				}
			}
			if tt.wantOK && tt.step == "install_github_runner" {
				if _, err := os.Stat(filepath.Join(dir, "actions-runner", "config.sh")); err != nil {
					t.Errorf("runner not extracted: %v", err)
				}
			}
			if !tt.wantOK && tt.step == "install_github_runner" {
				if _, err := os.Stat(filepath.Join(dir, "actions-runner")); err == nil {
					t.Error("a failed check still created the runner directory")
				}
			}
		})
	}
}
