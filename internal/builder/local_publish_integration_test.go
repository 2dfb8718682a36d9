package builder_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	. "github.com/runner-image-builder/github-runner-image-builder/internal/builder"
	"github.com/runner-image-builder/github-runner-image-builder/internal/cli"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/faultproxy"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// TestLocalPruneFailureKeepsPublished: a local build (guest-less: the base
// image file is the built image, no boot) published to it-b, whose pruning
// of the older revision fails (Glance answers 500 to every image DELETE,
// through a fault proxy in front of the real cloud), exits 10 with the
// image ID printed, and leaves the published image, the --output file and
// the older revision in place. Cleanups must not undo a publication.
func TestLocalPruneFailureKeepsPublished(t *testing.T) {
	testenv.Require(t)
	prefix := testenv.Prefix(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	imageName := prefix + "-local-prune"
	t.Cleanup(func() { deleteImages(t, testenv.UploadCloud, imageName) })

	// The revision consumers used until now: ours, older than the build's.
	dir := t.TempDir()
	seed := writeFileIn(t, dir, "old.raw", strings.Repeat("o", 4096))
	c := testenv.MustConnect(t, ctx, testenv.UploadCloud)
	older, err := testenv.UploadImage(ctx, c.Image, imageName, seed, "raw",
		map[string]string{PropPublished: "true", PropBuildID: "older", PropPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}

	ao, _, _, err := clouds.Parse(clouds.WithCloudName(testenv.UploadCloud), clouds.WithLocations(testenv.CloudsFile()))
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := faultproxy.New(ao.IdentityEndpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	prune, err := proxy.Add(faultproxy.Rule{Name: "prune fails", Method: http.MethodDelete, Service: faultproxy.Image,
		Path: `^/v2/images/[^/]+$`, Fault: faultproxy.Status(http.StatusInternalServerError)})
	if err != nil {
		t.Fatal(err)
	}
	defer prune.Remove()

	recipe := writeFileIn(t, dir, "user-data", "#cloud-config\n")
	verify := writeFileIn(t, dir, "verify.sh", "#!/bin/sh\ntrue\n")
	base := filepath.Join(dir, "base.qcow2")
	runTool(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "16M")
	outDir := filepath.Join(dir, "out")
	if err := os.Mkdir(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(outDir, "image.qcow2")
	env := newLocalEnv(t, "OS_CLIENT_CONFIG_FILE="+testenv.CloudsFile())
	l := WithoutGuest(&Local{OpenStack: &OpenStack{Getenv: env.getenv, Version: "prune-test",
		Connect: func(ctx context.Context, cloud string, log *slog.Logger) (Cloud, error) {
			return openstack.Connect(ctx, cloud, openstack.WithLogger(log), openstack.WithCloudsPaths(testenv.CloudsFile()),
				openstack.WithAuthURL(proxy.AuthURL()))
		}}})

	code, stdout, stderr := runLocalCLI(ctx, l, env, "--os-cloud", testenv.BuildCloud, "run", imageName,
		"--builder", "local", "--arch", "x64", "--prefix", prefix, "--base-image-file", base,
		"--user-data", recipe, "--skip-default-checks", "--verify-script", verify, "--output", out, "--upload-clouds", testenv.UploadCloud, "--keep-revisions", "1")
	t.Logf("exit %d\nstdout: %s\nstderr:\n%s", code, stdout, stderr)
	if want := errs.KindPartial.ExitCode(); code != want {
		t.Errorf("exit code %d, want %d (published, pruning failed)", code, want)
	}
	if prune.Fired() == 0 {
		t.Fatalf("the DELETE fault never fired: the test proves nothing (requests: %v)", proxy.Requests())
	}
	prune.Remove()

	if _, err := os.Stat(out); err != nil {
		t.Errorf("--output after a failed prune: %v", err)
	}
	ims, err := testenv.ImagesNamed(ctx, c.Image, imageName)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	published := ""
	for _, im := range ims {
		ids = append(ids, im.ID)
		if im.ID != older {
			published = im.ID
			if im.Status != images.ImageStatusActive || fmt.Sprint(im.Properties[PropPublished]) != "true" {
				t.Errorf("image %s: status %s, published %v; want an active published image", im.ID, im.Status, im.Properties[PropPublished])
			}
		}
	}
	if len(ims) != 2 || !slices.Contains(ids, older) || published == "" {
		t.Fatalf("it-b holds %v named %s; want the older revision %s and the new image", ids, imageName, older)
	}
	if want := cli.LocalFileHeader + out + "\n" + cli.SuccessHeader + published; stdout != want {
		t.Errorf("stdout %q, want %q: the image file and the published image", stdout, want)
	}
	if !strings.Contains(stderr, "Error: ") || !strings.Contains(stderr, "prun") {
		t.Errorf("stderr does not say that pruning failed:\n%s", stderr)
	}
}
