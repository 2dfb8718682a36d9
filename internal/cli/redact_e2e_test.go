package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/runner-image-builder/github-runner-image-builder/internal/build"
	"github.com/runner-image-builder/github-runner-image-builder/internal/builder"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
	"github.com/runner-image-builder/github-runner-image-builder/internal/provision"
	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// guestStepsBuild runs the real guest steps (ssh, cloud-init, script,
// verify, ...) of each job on a testenv.ShellGuest, through builder.Runner:
// the openstack builder's guest half, with no server to boot.
type guestStepsBuild struct {
	guest  *testenv.ShellGuest
	signer ssh.Signer
}

func (b guestStepsBuild) Build(ctx context.Context, log *slog.Logger, job builder.Job) ([]config.PublishedImage, error) {
	steps := builder.GuestSteps(builder.GuestConfig{
		Address:                  func(context.Context) (string, error) { return b.guest.Addr, nil },
		Signer:                   b.signer,
		Console:                  func(context.Context) (string, error) { return b.guest.Console(), nil },
		InsecureSkipHostKeyCheck: true,
		Script:                   job.Script,
		Secrets:                  job.Spec.Secrets,
		Checks:                   job.Checks,
		Timeouts:                 job.Spec.Timeouts,
		Log:                      log,
	})
	r := builder.Runner{Log: log}
	return nil, r.Run(ctx, steps)
}

// lockedBuffer is a bytes.Buffer safe for a writer and a reader at once.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// The audit's case, end to end without a guest boot: the build script
// stores the script secret in a file, on the console and in cloud-init's
// output log; the verify script prints it and fails. The secret, in none of
// the forms it travels in, reaches the log, the Error line on stderr, the
// failure callback's JSON or /healthz; the masked output does reach the
// log, so the secret was printed and caught.
func TestScriptSecretLeavesTheGuestOnlyRedacted(t *testing.T) {
	guest := testenv.StartShellGuest(t)
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	secret := "grib-redact-e2e-" + fmt.Sprintf("%x", priv.Seed()[:12])
	dir := t.TempDir()
	write := func(name, data string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tokenFile := write("token", secret, 0o600)
	userData := write("user-data", "#cloud-config\n", 0o600)
	verify := write("verify.sh", "#!/bin/sh\necho \"stored: $(cat stored)\"\nexit 1\n", 0o600)
	callbackOut := filepath.Join(dir, "callback.json")
	callback := write("callback.sh", "#!/bin/sh\ncat >> "+callbackOut+"\n", 0o700)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "#!/bin/sh\nset -eu\nprintf '%s' \"$TOKEN\" > stored\n"+
			"echo \"console: $TOKEN\" >> console\necho \"log: $TOKEN\" >> cloud-init-output.log\n")
	}))
	defer srv.Close()
	cfg := serviceConfig(t, fmt.Sprintf("upload_clouds: []\nmatrix: {bases: [noble], arches: [x64]}\n"+
		"script: {url: %q, secrets: {TOKEN: {file: %s}}}\nverify_script_file: %s\nuser_data_file: %s\nskip_default_checks: true\n"+
		"callback: {on_failure: [%s]}\nretry: {attempts: 1}\n", srv.URL+"/build.sh", tokenFile, verify, userData, callback))
	backend := Backend{
		Catalog: &memCatalog{images: map[string][]openstack.Image{}},
		Builds:  &build.Builds{OpenStack: guestStepsBuild{guest, signer}, HTTP: srv.Client()},
	}

	r := runApp(t, testEnv(), backend, "build", "--config", cfg)
	if r.code != 7 {
		t.Fatalf("build: exit %d, want 7 (verification failed)\nstderr:\n%s", r.code, r.stderr)
	}
	if data, err := os.ReadFile(filepath.Join(guest.Dir, "stored")); err != nil || string(data) != secret {
		t.Fatalf("the build script did not store the secret: %q, %v", data, err)
	}
	if !strings.Contains(r.stderr, "stored: "+provision.Mask) {
		t.Errorf("the verify script's output is not in the log, masked:\n%s", r.stderr)
	}

	// serve: its first check builds the same way; /healthz after it.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var serveErr lockedBuffer
	done := make(chan int, 1)
	go func() {
		app := &App{Stdout: io.Discard, Stderr: &serveErr, Environ: testEnv(), Backend: backend, GOARCH: "amd64"}
		done <- app.Main(ctx, []string{"--log-format", "json", "serve", "--config", cfg, "--listen", "127.0.0.1:0"})
	}()
	addr, checked := "", false
	for !checked {
		select {
		case code := <-done:
			t.Fatalf("serve ended (exit %d) before its first check:\n%s", code, serveErr.String())
		case <-time.After(50 * time.Millisecond):
		}
		sc := bufio.NewScanner(strings.NewReader(serveErr.String()))
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				continue
			}
			if a, ok := m["addr"].(string); ok && m["msg"] == "serving" {
				addr = a
			}
			checked = checked || m["msg"] == "scheduled build"
		}
	}
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	healthz, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	cancel()
	<-done

	cb, err := os.ReadFile(callbackOut)
	if err != nil || !bytes.Contains(cb, []byte(`"result":"failure"`)) {
		t.Fatalf("the failure callback did not run: %q, %v", cb, err)
	}
	for where, text := range map[string]string{
		"build's stderr (log and Error line)": r.stderr,
		"build's stdout":                      r.stdout,
		"serve's log":                         serveErr.String(),
		"the failure callback's JSON":         string(cb),
		"/healthz":                            string(healthz),
	} {
		for _, form := range testenv.SecretForms(secret) {
			if strings.Contains(text, form) {
				t.Errorf("the secret (as %q) is in %s:\n%s", form, where, text)
			}
		}
	}
}
