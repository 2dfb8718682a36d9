package service_test

// Integration test of the builder host against the test OpenStack
// (.ci/openstack-up.sh) with the real openstack builder and real qemu
// guests, driven through the command line in-process. Guest boots: 2.
//
//	GRIB_IT=1 go test -p 1 -run TestServiceBuildOnStack ./internal/service/ -timeout 40m

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/runner-image-builder/github-runner-image-builder/internal/builder"
	"github.com/runner-image-builder/github-runner-image-builder/internal/cli"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/manifest"
	"github.com/runner-image-builder/github-runner-image-builder/internal/service"
	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// A two-cell matrix (jammy and noble, x64) built on the test OpenStack and
// published to it-b: the success callback runs once with both image IDs
// (and fails, exit 3), the latest file and `latest` report the new images,
// and the image handed to consumers before — older, ours, beyond
// keep_revisions 1 — is not pruned because the callback failed.
func TestServiceBuildOnStack(t *testing.T) {
	imagePath := testenv.RequireImage(t)
	p := testenv.Prefix(t)
	ctx, cancel := context.WithTimeout(t.Context(), 35*time.Minute)
	defer cancel()
	dir := t.TempDir()
	vars := map[string]string{
		"OS_CLIENT_CONFIG_FILE": testenv.CloudsFile(),
		"HOME":                  dir,
		"XDG_STATE_HOME":        filepath.Join(dir, "xdg-state"),
		"XDG_CACHE_HOME":        filepath.Join(dir, "xdg-cache"),
		"TMPDIR":                filepath.Join(dir, "tmp"),
		"PATH":                  os.Getenv("PATH"),
	}
	if err := os.MkdirAll(vars["TMPDIR"], 0o700); err != nil {
		t.Fatal(err)
	}
	var environ []string
	for k, v := range vars {
		environ = append(environ, k+"="+v)
	}
	run := func(args ...string) (int, string, string) {
		var out, errb testenv.LockedBuffer
		app := &cli.App{Stdout: &out, Stderr: &errb, Environ: environ,
			Backend: stackBackend(func(k string) string { return vars[k] })}
		code := app.Main(ctx, args)
		tail := strings.Split(strings.TrimRight(errb.String(), "\n"), "\n")
		t.Logf("$ github-runner-image-builder %s\n-> exit %d\n--- stdout\n%s\n--- stderr (tail)\n%s", strings.Join(args, " "),
			code, out.String(), strings.Join(tail[max(0, len(tail)-30):], "\n"))
		return code, out.String(), errb.String()
	}
	names := []string{config.ImageName(p, config.BaseJammy, config.ArchX64), config.ImageName(p, config.BaseNoble, config.ArchX64)}

	// What init and the build leave by design is removed before the leak
	// check (which runs after this cleanup) looks for anything else.
	t.Cleanup(func() { testenv.RemoveBuildLeftovers(t, p, names) })
	for _, b := range []string{"jammy", "noble"} {
		code, _, stderr := run("--os-cloud", testenv.BuildCloud, "init", "--arch", "x64", "-b", b, "--prefix", p,
			"--base-image-file", imagePath, "--cache-dir", filepath.Join(dir, "cache"),
			"--base-image-property", testenv.GuestProperty+"=true")
		if code != 0 {
			t.Fatalf("init %s: exit %d: %s", b, code, stderr)
		}
	}

	// The image consumers got last time: ours, older than what the build makes.
	cb := testenv.MustConnect(t, ctx, testenv.UploadCloud)
	seed := filepath.Join(dir, "seed.raw")
	if err := os.WriteFile(seed, bytes.Repeat([]byte{7}, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	handed, err := testenv.UploadImage(ctx, cb.Image, names[0], seed, "raw",
		map[string]string{builder.PropPublished: "true", builder.PropBuildID: "handed"})
	if err != nil {
		t.Fatal(err)
	}
	stateDir := filepath.Join(dir, "state")
	state := fmt.Sprintf(`{"handed": {%q: {%q: %q}}}`, testenv.UploadCloud, names[0], handed)
	if err := os.MkdirAll(filepath.Join(stateDir, "service"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stateDir, "service", "state.json"), []byte(state), 0o600); err != nil {
		t.Fatal(err)
	}

	recipe := filepath.Join(dir, "user-data")
	verify := filepath.Join(dir, "verify.sh")
	callback := filepath.Join(dir, "callback.sh")
	calls := filepath.Join(dir, "calls")
	latestFile := filepath.Join(dir, "out", "latest.json")
	for path, content := range map[string]string{
		recipe:   "#cloud-config\nruncmd:\n  - [sh, -c, 'echo grib-recipe-ran > /var/lib/grib-recipe-marker']\n",
		verify:   "#!/bin/sh\ngrep -qx grib-recipe-ran /var/lib/grib-recipe-marker\n",
		callback: "#!/bin/sh\nprintf '%s\\n' \"$@\" >> " + calls + ".args\ncat >> " + calls + ".stdin\nexit 3\n",
	} {
		if err := os.WriteFile(path, []byte(content), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "config.yaml")
	cfgData := fmt.Sprintf(`cloud: %s
upload_clouds: [%s]
prefix: %s
matrix: {bases: [jammy, noble], arches: [x64]}
flavor: %s
network: %s
keep_revisions: 1
runner: {version: 2.330.0}
user_data_file: %s
verify_script_file: %s
skip_default_checks: true
timeouts: {boot: 30m, ssh: 10m, cloud_init: 15m}
parallelism: 2
callback: {on_success: %s, timeout: 1m}
latest_file: %s
state_dir: %s
cache_dir: %s
schedule: {base_image_refresh: 0s}
`, testenv.BuildCloud, testenv.UploadCloud, p, testenv.FlavorMin, testenv.Network, recipe, verify, callback,
		latestFile, stateDir, filepath.Join(dir, "cache"))
	if err := os.WriteFile(cfg, []byte(cfgData), 0o600); err != nil {
		t.Fatal(err)
	}

	code, stdout, stderr := run("--log-level", "debug", "build", "--config", cfg)
	if code != 11 || !strings.Contains(stderr, "Error: success callback "+callback+" exit status 3") {
		t.Fatalf("build: exit %d, want 11 (the callback failed after both images were built)", code)
	}
	// stdout: "NAME  built  it-b=ID" per cell, in matrix order.
	var built []string
	for i, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != names[i] || f[1] != "built" || !strings.HasPrefix(f[2], testenv.UploadCloud+"=") {
			t.Fatalf("build output line %q", line)
		}
		built = append(built, strings.TrimPrefix(f[2], testenv.UploadCloud+"="))
	}
	if len(built) != 2 {
		t.Fatalf("built %q", built)
	}

	args, err := os.ReadFile(calls + ".args")
	if err != nil {
		t.Fatal(err)
	}
	if string(args) != built[0]+"\n"+built[1]+"\n" {
		t.Errorf("callback arguments %q, want one call with %q", args, built)
	}
	stdin, _ := os.ReadFile(calls + ".stdin")
	var in struct {
		Result string `json:"result"`
		Images []struct{ Cloud, Base, Arch, Name, ID string }
	}
	if err := json.Unmarshal(stdin, &in); err != nil {
		t.Fatalf("callback stdin %q: %v", stdin, err)
	}
	if in.Result != "success" || len(in.Images) != 2 || in.Images[1].Base != "noble" || in.Images[1].ID != built[1] || in.Images[0].Cloud != testenv.UploadCloud {
		t.Errorf("callback stdin %s", stdin)
	}

	type relation struct {
		Clouds map[string]struct {
			ID     string `json:"id"`
			Tags   string `json:"tags"`
			Images []struct {
				ID, Tags       string
				RunnerVersion  string `json:"runner_version"`
				ManifestSHA256 string `json:"manifest_sha256"`
			} `json:"images"`
		} `json:"clouds"`
	}
	check := func(what string, data []byte) {
		t.Helper()
		var doc relation
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatalf("%s: %v: %s", what, err, data)
		}
		c := doc.Clouds[testenv.UploadCloud]
		var ids []string
		for _, im := range c.Images {
			ids = append(ids, im.ID)
			if im.RunnerVersion != "2.330.0" {
				t.Errorf("%s: image %s has runner version %q", what, im.ID, im.RunnerVersion)
			}
			// Each revision's manifest is kept beside the latest file; its
			// SHA-256 (the image's Glance property) is in the document.
			kept, err := os.ReadFile(filepath.Join(service.LatestManifestsDir(latestFile), im.ID+".json"))
			if err != nil || im.ManifestSHA256 == "" || manifest.SHA256(kept) != im.ManifestSHA256 {
				t.Errorf("%s: image %s has manifest_sha256 %q; the manifest kept beside the latest file: %v", what, im.ID, im.ManifestSHA256, err)
			}
		}
		if len(doc.Clouds) != 1 || c.ID != built[0] || c.Tags != "x64,jammy" || !slices.Equal(ids, built) {
			t.Errorf("%s: %s, want the images %q", what, data, built)
		}
	}
	latest, err := os.ReadFile(latestFile)
	if err != nil {
		t.Fatal(err)
	}
	check("latest file", latest)
	code, stdout, _ = run("latest", "--config", cfg, "--format", "json")
	if code != 0 {
		t.Fatalf("latest: exit %d", code)
	}
	check("latest --format json", []byte(stdout))

	// Two cells of one recipe on the same base image file: the same software.
	code, stdout, stderr = run("manifest", "diff", "--manifests-dir", service.LatestManifestsDir(latestFile), built[0], built[1])
	if code != 0 || stdout != "" {
		t.Errorf("manifest diff %s %s: exit %d, stdout %q, want no change: %s", built[0], built[1], code, stdout, stderr)
	}

	// keep_revisions 1, but the handed image stays: the callback failed.
	im, err := images.Get(ctx, cb.Image, handed).Extract()
	if err != nil || im.Status != images.ImageStatusActive {
		t.Errorf("the image handed to consumers before was pruned: %v %v", im, err)
	}
}
