package builder_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/members"

	"github.com/runner-image-builder/github-runner-image-builder/internal/builder"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// TestOpenStackRunRefusesForeignBaseImage: run boots only the base image
// init uploaded to the build project. An image of the same name and the same
// grib_ properties that an admin made public, or that another project
// shared with the build project (and the build project accepted), is never
// booted: beside ours it is skipped, alone it is refused with exit 5 and an
// error naming it and its owner, before any server exists. Init's image
// fails to spawn (grib_test_fail_spawn), the foreign ones would boot a fake
// server, so which one a run picked shows in how it fails. No guest boots.
func TestOpenStackRunRefusesForeignBaseImage(t *testing.T) {
	testenv.Require(t)
	t.Parallel()
	p := testenv.Prefix(t)
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()
	e := newITEnv(t)
	base := writeFile(t, "base.raw", strings.Repeat("\x00", 1<<20))
	e.mustInit(ctx, p, base, testenv.FailSpawnProperty+"=true")
	baseName := config.BaseImageName(p, config.BaseNoble, config.ArchX64)
	build := testenv.MustConnect(t, ctx, testenv.BuildCloud)
	ours := onlyImage(t, ctx, build, baseName)
	data, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	// A copy of init's marker and SHA-256: properties prove nothing.
	props := map[string]string{builder.PropPrefix: p, builder.PropBaseSHA256: hex.EncodeToString(sum[:])}
	if got := prop(ours, builder.PropBaseSHA256); got != props[builder.PropBaseSHA256] {
		t.Fatalf("init recorded %s %q, want %q", builder.PropBaseSHA256, got, props[builder.PropBaseSHA256])
	}
	time.Sleep(1100 * time.Millisecond) // Glance's seconds: the foreign images are newer

	admin := testenv.MustConnect(t, ctx, testenv.AdminCloud)
	public := foreignImage(t, ctx, admin, baseName, base, props)
	if _, err := images.Update(ctx, admin.Image, public.ID, images.UpdateOpts{
		images.UpdateVisibility{Visibility: images.ImageVisibilityPublic}}).Extract(); err != nil {
		t.Fatal(err)
	}
	recipe := writeFile(t, "user-data", testRecipe)
	verify := writeFile(t, "verify.sh", "#!/bin/sh\ntrue\n")
	args := runArgs(p, "--user-data", recipe, "--skip-default-checks", "--verify-script", verify, "--ssh-timeout", "1m")

	// Beside init's image, the newer public one is skipped with a warning.
	code, stdout, stderr := e.cli(ctx, e.environ(), args...)
	if last := tailLines(stderr, 1); code != 6 || stdout != "" || !strings.Contains(last, testenv.FailSpawnProperty) {
		t.Errorf("with init's image and a public one: exit %d, stdout %q, error %q; want 6 from booting init's image", code, stdout, last)
	}
	if !slices.ContainsFunc(strings.Split(stderr, "\n"), func(l string) bool {
		return strings.Contains(l, "not booting an image that init did not upload") && strings.Contains(l, public.ID)
	}) {
		t.Errorf("no warning names the skipped public image %s", public.ID)
	}
	assertOnlyInitLeft(t, ctx, p)

	// Without it, the public image is refused.
	if err := images.Delete(ctx, build.Image, ours.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	refused := func(what string, im *images.Image) {
		t.Helper()
		code, stdout, stderr := e.cli(ctx, e.environ(), args...)
		last := tailLines(stderr, 1)
		if code != 5 || stdout != "" || !strings.HasPrefix(last, "Error: ") || !strings.Contains(last, im.ID) ||
			!strings.Contains(last, im.Owner) || !strings.Contains(last, "run init") {
			t.Errorf("with only a %s image: exit %d, stdout %q, error %q; want 5 naming image %s, its owner %s and init",
				what, code, stdout, last, im.ID, im.Owner)
		}
		assertOnlyInitLeft(t, ctx, p)
	}
	refused("public", public)

	// Nor is an image another project shared with the build project.
	if err := images.Delete(ctx, admin.Image, public.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	other := testenv.MustConnect(t, ctx, testenv.UploadCloud)
	shared := foreignImage(t, ctx, other, baseName, base, props)
	if _, err := images.Update(ctx, other.Image, shared.ID, images.UpdateOpts{
		images.UpdateVisibility{Visibility: images.ImageVisibilityShared}}).Extract(); err != nil {
		t.Fatal(err)
	}
	if _, err := members.Create(ctx, other.Image, shared.ID, ours.Owner).Extract(); err != nil {
		t.Fatal(err)
	}
	if _, err := members.Update(ctx, build.Image, shared.ID, ours.Owner, members.UpdateOpts{Status: "accepted"}).Extract(); err != nil {
		t.Fatal(err)
	}
	if seen := listByName(t, ctx, build, baseName); len(seen) != 1 || seen[0].ID != shared.ID {
		t.Fatalf("the build project sees %d images named %s, want only the shared %s", len(seen), baseName, shared.ID)
	}
	refused("shared", shared)
}

// foreignImage uploads the file at path to c as an image named name with
// props; a cleanup deletes it.
func foreignImage(t *testing.T, ctx context.Context, c *testenv.Cloud, name, path string, props map[string]string) *images.Image {
	t.Helper()
	id, err := testenv.UploadImage(ctx, c.Image, name, path, "raw", props)
	if id != "" {
		t.Cleanup(func() {
			cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := images.Delete(cctx, c.Image, id).ExtractErr(); err != nil && !gophercloud.ResponseCodeIs(err, 404) {
				t.Errorf("delete image %s: %v", id, err)
			}
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	return getImage(t, ctx, c, id)
}
