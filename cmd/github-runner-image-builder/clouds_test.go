package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/cli"
)

// TestCloudsYAMLSettingsThroughTheCLI runs latest-build-id with the real
// wiring against a clouds.yaml: an unsupported auth_type is one Error:
// line, exit 2, before anything is reached; insecure: true is warned
// about, naming the cloud, before the (here refused) connection.
func TestCloudsYAMLSettingsThroughTheCLI(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "https://" + l.Addr().String() + "/v3"
	l.Close()
	tests := []struct {
		name     string
		entry    string
		wantCode int
		want     []string // in stderr
		oneLine  bool     // stderr is only the Error: line
	}{
		{name: "unsupported auth_type", entry: "auth_type: v3oidcpassword", wantCode: 2, oneLine: true,
			want: []string{`Error: cloud "c" in `, `auth_type "v3oidcpassword" is not supported; use one of password, v3password, token, v3token, v3applicationcredential`}},
		{name: "insecure warned", entry: "insecure: true", wantCode: 3,
			want: []string{"TLS certificate checks are off", "cloud=c", `setting="insecure: true"`, "Error: ", "cannot reach Keystone"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			clouds := filepath.Join(dir, "clouds.yaml")
			body := "clouds:\n  c:\n    auth:\n      auth_url: " + closed + "\n      username: u\n      password: pw-not-shown\n" +
				"      project_name: p\n      user_domain_name: Default\n      project_domain_name: Default\n    " + tt.entry + "\n"
			if err := os.WriteFile(clouds, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			app := &cli.App{Stdout: &stdout, Stderr: &stderr, Backend: Backend("test", nil, nil), Environ: []string{
				"OS_CLIENT_CONFIG_FILE=" + clouds, "HOME=" + dir, "XDG_STATE_HOME=" + filepath.Join(dir, "state"),
				"XDG_CACHE_HOME=" + filepath.Join(dir, "cache"),
			}}
			code := app.Main(t.Context(), []string{"--os-cloud", "c", "latest-build-id", "x"})
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.wantCode, stderr.String())
			}
			for _, s := range tt.want {
				if !strings.Contains(stderr.String(), s) {
					t.Errorf("stderr does not contain %q:\n%s", s, stderr.String())
				}
			}
			if tt.oneLine && strings.Count(stderr.String(), "\n") != 1 {
				t.Errorf("stderr is not one line:\n%s", stderr.String())
			}
			if strings.Contains(stderr.String()+stdout.String(), "pw-not-shown") {
				t.Errorf("the password was shown:\n%s", stderr.String())
			}
		})
	}
}
