package builder

import (
	"context"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// The copy and publish steps against the test OpenStack, without a guest:
// a qcow2 "snapshot" with the properties Nova gives one (its base's hw_
// and --base-image-property ones, and the build cloud's own) is uploaded
// to it-a and copied by the real code to it-b as raw and to it-c as qcow2.
// Until publish the copies are hidden; then both are listed, carry the
// base's properties and none of it-a's, record their own format and
// checksum, and hold the same disk (qemu-img compare).
func TestITCopyFormatsPropertiesHidden(t *testing.T) {
	testenv.Require(t)
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatalf("qemu-img is needed on the host: %v", err)
	}
	prefix := testenv.Prefix(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	name := config.ImageName(prefix, config.BaseNoble, config.ArchX64)

	// A 64 MiB disk with data at a few places, as qcow2.
	dir := t.TempDir()
	raw, qcow := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "disk.qcow2")
	f, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	for i, off := range []int64{0, 5 << 20, 33<<20 + 512, 64<<20 - 4096} {
		if _, err := f.WriteAt([]byte(prefix+" block "+string(rune('a'+i))), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out, err := exec.CommandContext(ctx, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}

	info := buildInfo{ID: newBuildID(), Prefix: prefix, Arch: config.ArchX64, Base: config.BaseNoble, Time: time.Now(), BuilderVersion: "it-test"}
	snapProps := info.imageProperties(false)
	inherited := map[string]string{"hw_firmware_type": "uefi", "hw_machine_type": "q35", "site_owner": "ci", PropBaseSHA256: "0123abcd"}
	own := map[string]string{"instance_uuid": "9d0c6f1e-0000-4000-8000-000000000001", "base_image_ref": "9d0c6f1e-0000-4000-8000-000000000002",
		"image_type": "snapshot", "owner_project_name": "it-a", "boot_roles": "member", "user_id": "someone"}
	maps.Copy(snapProps, inherited)
	maps.Copy(snapProps, own)
	ca := testenv.MustConnect(t, ctx, testenv.BuildCloud)
	srcID, err := testenv.UploadImage(ctx, ca.Image, name, qcow, "qcow2", snapProps)
	if srcID != "" {
		t.Cleanup(func() { _ = images.Delete(context.WithoutCancel(ctx), ca.Image, srcID).ExtractErr() })
	}
	if err != nil {
		t.Fatal(err)
	}

	connect := ConnectClouds([]string{testenv.CloudsFile()}, config.HostProxy{}, nil)
	src, err := connect(ctx, testenv.BuildCloud, discard())
	if err != nil {
		t.Fatal(err)
	}
	snap, err := src.GetImage(ctx, srcID)
	if err != nil {
		t.Fatal(err)
	}
	scratch := t.TempDir()
	b := &osBuild{
		o:   &OpenStack{Connect: connect, Getenv: os.Getenv},
		log: discard(),
		spec: config.RunSpec{ImageName: name, Cloud: testenv.BuildCloud, Prefix: prefix, Arch: config.ArchX64, Base: config.BaseNoble,
			UploadClouds: []string{testenv.UploadCloud, testenv.OtherCloud}, Visibility: config.VisibilityPrivate,
			UploadDiskFormats: map[string]config.DiskFormat{testenv.UploadCloud: config.DiskFormatRaw}, ScratchDir: scratch},
		info: info, cloud: src, snapshot: snap,
	}
	attachPublication(b)
	cb, cc := testenv.MustConnect(t, ctx, testenv.UploadCloud), testenv.MustConnect(t, ctx, testenv.OtherCloud)
	t.Cleanup(func() { // the copies, published or not
		if err := b.pub.cleanupCopies(context.WithoutCancel(ctx), true); err != nil {
			t.Errorf("removing the copies: %v", err)
		}
	})

	if err := b.copy(ctx); err != nil {
		t.Fatal(err)
	}
	listed := func(c *testenv.Cloud, id string) bool {
		t.Helper()
		ims, err := testenv.ImagesNamed(ctx, c.Image, name)
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(ims, func(im images.Image) bool { return im.ID == id })
	}
	ids := map[string]string{}
	for cloud, c := range map[string]*testenv.Cloud{testenv.UploadCloud: cb, testenv.OtherCloud: cc} {
		ids[cloud] = b.pub.copies.done[cloud].image.ID
		im, err := images.Get(ctx, c.Image, ids[cloud]).Extract()
		if err != nil {
			t.Fatal(err)
		}
		if !im.Hidden || listed(c, im.ID) {
			t.Errorf("%s: the checked, unpublished copy %s is hidden %v, listed %v; want hidden and not listed", cloud, im.ID, im.Hidden, listed(c, im.ID))
		}
	}
	if err := b.pub.publish(ctx); err != nil {
		t.Fatal(err)
	}

	wantFormat := map[string]string{testenv.UploadCloud: "raw", testenv.OtherCloud: "qcow2"}
	files := map[string]string{}
	for _, p := range b.pub.published {
		c := map[string]*testenv.Cloud{testenv.UploadCloud: cb, testenv.OtherCloud: cc}[p.Cloud]
		im, err := images.Get(ctx, c.Image, p.ID).Extract()
		if err != nil {
			t.Fatal(err)
		}
		if im.Hidden || !listed(c, im.ID) {
			t.Errorf("%s: the published copy is hidden %v, listed %v", p.Cloud, im.Hidden, listed(c, im.ID))
		}
		if im.DiskFormat != wantFormat[p.Cloud] || p.DiskFormat != im.DiskFormat || p.Checksum != im.Checksum || p.Checksum == "" {
			t.Errorf("%s: format %s (recorded %s), checksum %s (recorded %s); want %s", p.Cloud, im.DiskFormat, p.DiskFormat, im.Checksum, p.Checksum, wantFormat[p.Cloud])
		}
		for k, v := range inherited {
			if got, _ := im.Properties[k].(string); got != v {
				t.Errorf("%s: property %s = %q, want the snapshot's %q", p.Cloud, k, got, v)
			}
		}
		for k := range own {
			if v, ok := im.Properties[k]; ok {
				t.Errorf("%s: carries the build cloud's %s = %v", p.Cloud, k, v)
			}
		}
		if got, _ := im.Properties[PropPublished].(string); got != "true" {
			t.Errorf("%s: %s = %q", p.Cloud, PropPublished, got)
		}
		files[p.Cloud] = downloadTo(t, ctx, c, p.ID, filepath.Join(dir, p.Cloud+"."+im.DiskFormat))
	}
	if snapID := b.snapshot.ID; ids[testenv.UploadCloud] == snapID || ids[testenv.OtherCloud] == snapID {
		t.Error("a copy is the snapshot itself")
	}
	// The raw copy and the qcow2 copy hold the same disk, the source's.
	for _, args := range [][]string{
		{"compare", "-f", "raw", "-F", "qcow2", files[testenv.UploadCloud], files[testenv.OtherCloud]},
		{"compare", "-f", "raw", "-F", "raw", files[testenv.UploadCloud], raw},
	} {
		if out, err := exec.CommandContext(ctx, "qemu-img", args...).CombinedOutput(); err != nil {
			t.Errorf("qemu-img %v: %v: %s", args, err, out)
		}
	}
	if err := b.pub.cleanupCopies(ctx, false); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(scratch); len(left) != 0 {
		t.Errorf("scratch files left: %v", left)
	}
	for _, p := range b.pub.published { // published: they stay until the test removes them
		c := map[string]*testenv.Cloud{testenv.UploadCloud: cb, testenv.OtherCloud: cc}[p.Cloud]
		if err := images.Delete(ctx, c.Image, p.ID).ExtractErr(); err != nil {
			t.Errorf("deleting %s in %s: %v", p.ID, p.Cloud, err)
		}
	}
}

// downloadTo writes image id's data to path.
func downloadTo(t *testing.T, ctx context.Context, c *testenv.Cloud, id, path string) string {
	t.Helper()
	body, err := imagedata.Download(ctx, c.Image, id).Extract()
	if err != nil {
		t.Fatalf("download %s: %v", id, err)
	}
	defer body.Close()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(f, body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("download %s: %v", id, err)
	}
	return path
}
