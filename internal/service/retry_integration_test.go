package service_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
	"go.yaml.in/yaml/v3"

	"github.com/runner-image-builder/github-runner-image-builder/internal/builder"
	"github.com/runner-image-builder/github-runner-image-builder/internal/cli"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/faultproxy"
	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// buildCloudFaultProxy is a fault proxy in front of the build cloud's
// Keystone (warnings logged to t), closed when t ends.
func buildCloudFaultProxy(t *testing.T) *faultproxy.Proxy {
	t.Helper()
	ao, _, _, err := clouds.Parse(clouds.WithCloudName(testenv.BuildCloud), clouds.WithLocations(testenv.CloudsFile()))
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := faultproxy.New(ao.IdentityEndpoint, faultproxy.WithLogger(slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	return proxy
}

// proxiedClouds writes a copy of the test OpenStack's clouds.yaml whose
// build cloud authenticates (and so reaches every service) through p.
func proxiedClouds(t *testing.T, p *faultproxy.Proxy) string {
	t.Helper()
	data, err := os.ReadFile(testenv.CloudsFile())
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	cloud := doc["clouds"].(map[string]any)[testenv.BuildCloud].(map[string]any)
	cloud["auth"].(map[string]any)["auth_url"] = p.AuthURL()
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "clouds.yaml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// proxiedBuildFiles writes a minimal recipe and verify script into dir and
// returns them with the environment of a build whose clouds go through
// proxy (proxiedClouds) and whose home and state are under dir.
func proxiedBuildFiles(t *testing.T, proxy *faultproxy.Proxy, dir string) (recipe, verify string, environ []string) {
	t.Helper()
	recipe = filepath.Join(dir, "user-data")
	verify = filepath.Join(dir, "verify.sh")
	for path, content := range map[string]string{recipe: "#cloud-config\n", verify: "#!/bin/sh\ntrue\n"} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	vars := map[string]string{
		"OS_CLIENT_CONFIG_FILE": proxiedClouds(t, proxy),
		"HOME":                  dir,
		"XDG_STATE_HOME":        filepath.Join(dir, "xdg-state"),
		"XDG_CACHE_HOME":        filepath.Join(dir, "xdg-cache"),
		"PATH":                  os.Getenv("PATH"),
	}
	for k, v := range vars {
		environ = append(environ, k+"="+v)
	}
	return recipe, verify, environ
}

// A build failing with a transient cloud error (a 503 or a reset on
// "create server", injected by the fault proxy in front of the real
// OpenStack) is retried with backoff; a 4xx is not. The faults hit before
// any server exists, so no guest boots.
func TestServiceRetriesTransientCloudErrors(t *testing.T) {
	testenv.Require(t)
	p := testenv.Prefix(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	admin := testenv.MustConnect(t, ctx, testenv.BuildCloud)
	proxy := buildCloudFaultProxy(t)
	name := config.ImageName(p, config.BaseNoble, config.ArchX64)
	t.Cleanup(func() { testenv.RemoveBuildLeftovers(t, p, []string{name}) })

	// A base image that is never booted: the faults come first.
	dir := t.TempDir()
	seed := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(seed, bytes.Repeat([]byte{1}, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	// With the properties init gives it: run boots no other image.
	seedSum := sha256.Sum256(bytes.Repeat([]byte{1}, 4096))
	baseProps := map[string]string{builder.PropPrefix: p, builder.PropBaseSHA256: hex.EncodeToString(seedSum[:])}
	if _, err := testenv.UploadImage(ctx, admin.Image, config.BaseImageName(p, config.BaseNoble, config.ArchX64), seed, "raw", baseProps); err != nil {
		t.Fatal(err)
	}
	recipe, verify, environ := proxiedBuildFiles(t, proxy, dir)
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`cloud: %s
prefix: %s
matrix: {bases: [noble], arches: [x64]}
flavor: %s
network: %s
runner: {version: 2.330.0}
user_data_file: %s
verify_script_file: %s
skip_default_checks: true
retry: {attempts: 3, min_delay: 10ms, max_delay: 20ms}
state_dir: %s
schedule: {base_image_refresh: 0s}
`, testenv.BuildCloud, p, testenv.FlavorMin, testenv.Network, recipe, verify, filepath.Join(dir, "state"))), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		fault  faultproxy.Fault
		builds int // build attempts: 3 when transient, else 1
		fired  int // create-server calls: each build tries a transient create 3 times
	}{
		{"503 retried", faultproxy.Status(503), 3, 9},
		{"reset retried", faultproxy.Reset(), 3, 9},
		{"400 not retried", faultproxy.Status(400), 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := proxy.Add(faultproxy.Rule{Method: "POST", Service: faultproxy.Compute, Path: `/servers$`, Fault: tt.fault})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Remove()
			var out, errb testenv.LockedBuffer
			app := &cli.App{Stdout: &out, Stderr: &errb, Environ: environ,
				Backend: stackBackend(config.Getenv(environ))}
			code := app.Main(ctx, []string{"--log-level", "debug", "build", "--config", cfg})
			t.Logf("exit %d\nstdout %s\nstderr (tail) %s", code, out.String(), tail(errb.String(), 15))
			if h.Fired() != tt.fired {
				t.Errorf("create server was called %d times, want %d", h.Fired(), tt.fired)
			}
			retries := strings.Count(errb.String(), "transient cloud error: retrying the build")
			if retries != tt.builds-1 {
				t.Errorf("%d retries logged, want %d", retries, tt.builds-1)
			}
			if code == 0 || !strings.Contains(out.String(), name+"  failed") {
				t.Errorf("exit %d, stdout %q: want the cell reported failed", code, out.String())
			}
		})
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
