package builder_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/runner-image-builder/github-runner-image-builder/internal/builder"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/manifest"
	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// TestManifestDiffNamesTheAddedPackage: two local builds through the whole
// command line and build path (no guest boot: the guest steps run on a
// testenv.ShellGuest, whose dpkg-query lists what the build scripts
// "installed"), published to it-b. The second build's script installs one
// package more. Each image's manifest is in the guest at
// /etc/runner-image/manifest.json, byte for byte the one beside --output
// and the one kept by image ID; its SHA-256 is the Glance property
// grib_manifest_sha256 and `run --format json`'s manifest_sha256; and
// `manifest diff OLD NEW` of the two image IDs prints that one package.
func TestManifestDiffNamesTheAddedPackage(t *testing.T) {
	testenv.Require(t)
	prefix := testenv.Prefix(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	imageName := prefix + "-manifest"
	t.Cleanup(func() { deleteImages(t, testenv.UploadCloud, imageName) })

	guest := testenv.StartShellGuest(t)
	dpkgOut := filepath.Join(guest.Dir, "dpkg-query.out")
	dir := t.TempDir()
	recipe := writeFileIn(t, dir, "user-data", "#cloud-config\n")
	verify := writeFileIn(t, dir, "verify.sh", "#!/bin/sh\ntrue\n")
	base := filepath.Join(dir, "base.qcow2")
	runTool(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "16M")
	env := newLocalEnv(t, "OS_CLIENT_CONFIG_FILE="+testenv.CloudsFile())
	l := WithGuestAt(&Local{OpenStack: &OpenStack{Getenv: env.getenv, Version: "manifest-test"}}, guest.Addr)
	const runnerVersion, runnerSHA = e2eRunnerVersion, e2eRunnerSHA256

	// install is a build script that "installs" packages: dpkg-query lists them.
	install := func(pkgs ...string) string {
		var b strings.Builder
		b.WriteString("#!/bin/sh\nset -eu\n")
		for _, p := range pkgs {
			fmt.Fprintf(&b, "printf '%%s\\t%%s\\tinstalled\\n' %s >> %s\n", p, dpkgOut)
		}
		return b.String()
	}
	build := func(n int, script string) (id string) {
		t.Helper()
		if err := os.WriteFile(dpkgOut, []byte("bash\t5.2.15-2+b2\tinstalled\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_ = os.Remove(filepath.Join(guest.Dir, "powered-off"))
		out := filepath.Join(dir, fmt.Sprintf("image-%d.qcow2", n))
		code, stdout, stderr := runLocalCLI(ctx, l, env, "--os-cloud", testenv.BuildCloud, "run", imageName,
			"--builder", "local", "--arch", "x64", "--prefix", prefix, "--base-image-file", base, "--user-data", recipe,
			"--runner-version", runnerVersion, "--runner-sha256", runnerSHA, "--script-url", testenv.ServeScript(t, script),
			"--skip-default-checks", "--verify-script", verify, "--insecure-skip-host-key-check",
			"--output", out, "--upload-clouds", testenv.UploadCloud, "--keep-revisions", "2", "--format", "json")
		if code != 0 {
			t.Fatalf("build %d: exit %d\nstdout: %s\nstderr:\n%s", n, code, stdout, stderr)
		}
		var res struct {
			Output         string `json:"output"`
			ManifestSHA256 string `json:"manifest_sha256"`
			Images         []config.PublishedImage
		}
		if err := json.Unmarshal([]byte(stdout), &res); err != nil || len(res.Images) != 1 {
			t.Fatalf("build %d: stdout %q: %v", n, stdout, err)
		}
		id = res.Images[0].ID

		inGuest, err := os.ReadFile(filepath.Join(guest.Dir, strings.TrimPrefix(manifest.GuestPath, "/")))
		if err != nil {
			t.Fatalf("build %d: no manifest in the guest: %v", n, err)
		}
		beside, err := os.ReadFile(ManifestBeside(out))
		if err != nil || !bytes.Equal(beside, inGuest) {
			t.Errorf("build %d: the manifest beside %s (%v) is not the guest's:\n%s\nguest:\n%s", n, out, err, beside, inGuest)
		}
		state, _ := config.StateDir(env.getenv, prefix)
		kept, err := os.ReadFile(config.ManifestFile(config.ManifestsDir(state), id))
		if err != nil || !bytes.Equal(kept, inGuest) {
			t.Errorf("build %d: the manifest kept for image %s (%v) is not the guest's", n, id, err)
		}
		sum := manifest.SHA256(inGuest)
		if res.ManifestSHA256 != sum || res.Images[0].ManifestSHA256 != sum {
			t.Errorf("build %d: --format json says manifest_sha256 %q / %q, want %s", n, res.ManifestSHA256, res.Images[0].ManifestSHA256, sum)
		}
		c := testenv.MustConnect(t, ctx, testenv.UploadCloud)
		ims, err := testenv.ImagesNamed(ctx, c.Image, imageName)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, im := range ims {
			if im.ID == id {
				found = true
				if got := fmt.Sprint(im.Properties[PropManifestSHA256]); got != sum {
					t.Errorf("build %d: image %s has %s %q, want %s", n, id, PropManifestSHA256, got, sum)
				}
			}
		}
		if !found {
			t.Errorf("build %d: image %s is not in %s", n, id, testenv.UploadCloud)
		}
		m, err := manifest.Parse(inGuest)
		if err != nil || m.Runner.Version != runnerVersion || m.Runner.SHA256 != runnerSHA || m.RecipeSHA256 != manifest.SHA256([]byte("#cloud-config\n")) {
			t.Errorf("build %d: manifest %+v, %v; want runner %s and the recipe's SHA-256", n, m, err, runnerVersion)
		}
		if _, err := os.Stat(filepath.Join(guest.Dir, "powered-off")); err != nil {
			t.Errorf("build %d: the guest was not told to power off after the manifest: %v", n, err)
		}
		return id
	}
	older := build(1, install("curl 7.88.1-10"))
	newer := build(2, install("curl 7.88.1-10", "jq 1.6-2.1"))

	code, stdout, stderr := runLocalCLI(ctx, l, env, "manifest", "diff", older, newer)
	if code != 0 || stdout != "+ jq 1.6-2.1\n" {
		t.Errorf("manifest diff %s %s: exit %d, stdout %q, want \"+ jq 1.6-2.1\\n\"\nstderr:\n%s", older, newer, code, stdout, stderr)
	}
}
