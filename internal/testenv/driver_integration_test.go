package testenv_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/keypairs"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"

	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// uploadFakeImage uploads 1 MiB of zeros as a raw image: servers booted from
// it are fake (no guest) unless props say otherwise. A cleanup deletes it.
func uploadFakeImage(t *testing.T, ctx context.Context, c *testenv.Cloud, name string, props map[string]string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "zeros.raw")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	id, err := testenv.UploadImage(ctx, c.Image, name, path, "raw", props)
	if id != "" {
		t.Cleanup(func() {
			if err := images.Delete(context.Background(), c.Image, id).ExtractErr(); err != nil {
				t.Errorf("delete image %s: %v", name, err)
			}
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func bootServer(t *testing.T, ctx context.Context, c *testenv.Cloud, name, imageID string) string {
	t.Helper()
	srv, err := servers.Create(ctx, c.Compute, servers.CreateOpts{
		Name: name, ImageRef: imageID, FlavorRef: flavorID(t, ctx, c, testenv.FlavorSmall),
		Networks: []servers.Network{{UUID: networkID(t, ctx, c)}},
	}, nil).Extract()
	if err != nil {
		t.Fatalf("create server %s: %v", name, err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := testenv.DeleteServer(cctx, c.Compute, srv.ID); err != nil {
			t.Errorf("delete server %s: %v", name, err)
		}
	})
	return srv.ID
}

// TestLeakCheck proves the leak check can fail: it finds what a "test" left
// in another project (a server and its port, a port, an image, a keypair, a
// security group), then
// deletes them all.
func TestLeakCheck(t *testing.T) {
	testenv.Require(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	prefix := testenv.Prefix(t) // its own end check must then find nothing
	leakPrefix := prefix + "-leak"
	c := testenv.MustConnect(t, ctx, testenv.UploadCloud)

	path := filepath.Join(t.TempDir(), "zeros.raw")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	imageID, err := testenv.UploadImage(ctx, c.Image, leakPrefix+"-image", path, "raw", nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := servers.Create(ctx, c.Compute, servers.CreateOpts{
		Name: leakPrefix + "-vm", ImageRef: imageID, FlavorRef: flavorID(t, ctx, c, testenv.FlavorSmall),
		Networks: []servers.Network{{UUID: networkID(t, ctx, c)}},
	}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keypairs.Create(ctx, c.Compute, keypairs.CreateOpts{Name: leakPrefix + "-key"}).Extract(); err != nil {
		t.Fatal(err)
	}
	if _, err := groups.Create(ctx, c.Network, groups.CreateOpts{Name: leakPrefix + "-sg"}).Extract(); err != nil {
		t.Fatal(err)
	}
	if _, err := ports.Create(ctx, c.Network, ports.CreateOpts{Name: leakPrefix + "-port", NetworkID: networkID(t, ctx, c)}).Extract(); err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.WaitServer(ctx, c.Compute, srv.ID, "ACTIVE"); err != nil {
		t.Fatal(err)
	}

	leaks, err := testenv.FindLeaks(ctx, leakPrefix)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, l := range leaks {
		kinds[l.Kind]++
	}
	for _, kind := range []string{"server", "image", "keypair", "security group"} {
		if kinds[kind] != 1 {
			t.Errorf("found %d leaked %s, want 1 (all: %v)", kinds[kind], kind, leaks)
		}
	}
	// The server's port (Nova names it nothing) and the named one.
	if kinds["port"] != 2 {
		t.Errorf("found %d leaked ports, want 2: the server's and %s (all: %v)", kinds["port"], leakPrefix+"-port", leaks)
	}
	if err := testenv.DeleteLeaks(ctx, leaks); err != nil {
		t.Fatal(err)
	}
	if again, err := testenv.FindLeaks(ctx, leakPrefix); err != nil || len(again) != 0 {
		t.Errorf("after DeleteLeaks: %v, %v", again, err)
	}
}

// TestFailSpawnProperty: an image with grib_test_fail_spawn=true gives an
// ERROR server whose fault names the property.
func TestFailSpawnProperty(t *testing.T) {
	testenv.Require(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	prefix := testenv.Prefix(t)
	c := testenv.MustConnect(t, ctx, testenv.BuildCloud)
	imageID := uploadFakeImage(t, ctx, c, prefix+"-fail", map[string]string{testenv.FailSpawnProperty: "true"})
	id := bootServer(t, ctx, c, prefix+"-vm", imageID)
	s, err := testenv.WaitServer(ctx, c.Compute, id, "ERROR")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(s.Fault.Message, testenv.FailSpawnProperty) {
		t.Errorf("fault = %q, want it to name %s", s.Fault.Message, testenv.FailSpawnProperty)
	}
}

// TestFakeServerSnapshot: servers of unmarked images are fake (no guest), and
// their snapshots still become active (1 MiB raw).
func TestFakeServerSnapshot(t *testing.T) {
	testenv.Require(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	prefix := testenv.Prefix(t)
	c := testenv.MustConnect(t, ctx, testenv.OtherCloud)
	id := bootServer(t, ctx, c, prefix+"-vm", uploadFakeImage(t, ctx, c, prefix+"-img", nil))
	if _, err := testenv.WaitServer(ctx, c.Compute, id, "ACTIVE"); err != nil {
		t.Fatal(err)
	}
	out, err := servers.ShowConsoleOutput(ctx, c.Compute, id, servers.ShowConsoleOutputOpts{}).Extract()
	if err != nil || !strings.Contains(out, "FAKE CONSOLE OUTPUT") {
		t.Errorf("console of a fake server = %q, %v", out, err)
	}
	snapID, err := servers.CreateImage(ctx, c.Compute, id, servers.CreateImageOpts{Name: prefix + "-snap"}).ExtractImageID()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = images.Delete(context.Background(), c.Image, snapID).ExtractErr() })
	snap, err := testenv.WaitImage(ctx, c.Image, snapID)
	if err != nil {
		t.Fatal(err)
	}
	if snap.DiskFormat != "raw" || snap.SizeBytes != 1<<20 {
		t.Errorf("fake snapshot is %s, %d bytes; want raw, 1 MiB", snap.DiskFormat, snap.SizeBytes)
	}
}

// TestGuestQueue: with one guest slot (GRIB_GUEST_SLOTS=1, the default) a
// guest waits while another runs: a new server stays BUILD, a started one
// stays SHUTOFF (task powering-on), stopping or deleting the running guest
// lets the next one boot, and a server deleted while it waits never boots. The
// driver records each boot. The guests boot a 1 MiB image with no OS (qemu
// sits in its firmware), so they cost seconds of CPU, not a guest boot each.
func TestGuestQueue(t *testing.T) {
	testenv.Require(t)
	// Other tests' guests may hold the slot first: generous deadline.
	ctx, cancel := context.WithTimeout(t.Context(), 25*time.Minute)
	defer cancel()
	prefix := testenv.Prefix(t)
	c := testenv.MustConnect(t, ctx, testenv.BuildCloud)
	// os_shutdown_timeout: the firmware ignores the ACPI power button, so a
	// stop would otherwise wait Nova's 60 s before qemu is killed.
	imageID := uploadFakeImage(t, ctx, c, prefix+"-noos", map[string]string{
		testenv.GuestProperty: "true", "os_shutdown_timeout": "1",
	})

	first := bootServer(t, ctx, c, prefix+"-first", imageID)
	if _, err := testenv.WaitServer(ctx, c.Compute, first, "ACTIVE"); err != nil {
		t.Fatal(err)
	}
	second := bootServer(t, ctx, c, prefix+"-second", imageID)
	stillQueued(t, ctx, c, second, "BUILD", "spawning")

	// Stopping the running guest frees its slot.
	if err := servers.Stop(ctx, c.Compute, first).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.WaitServer(ctx, c.Compute, first, "SHUTOFF"); err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.WaitServer(ctx, c.Compute, second, "ACTIVE"); err != nil {
		t.Fatal(err)
	}

	// Starting a guest again queues it too.
	if err := servers.Start(ctx, c.Compute, first).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	stillQueued(t, ctx, c, first, "SHUTOFF", "powering-on")

	// A server deleted while it waits leaves the queue without booting.
	third := bootServer(t, ctx, c, prefix+"-third", imageID)
	stillQueued(t, ctx, c, third, "BUILD", "spawning")
	if err := testenv.DeleteServer(ctx, c.Compute, third); err != nil {
		t.Fatal(err)
	}

	// Deleting the running guest frees its slot.
	if err := testenv.DeleteServer(ctx, c.Compute, second); err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.WaitServer(ctx, c.Compute, first, "ACTIVE"); err != nil {
		t.Fatal(err)
	}

	boots, err := testenv.GuestBoots(prefix)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range boots {
		got = append(got, strings.TrimPrefix(b.Server, prefix+"-")+"/"+b.Kind)
		if b.ImageID != imageID || b.ImageBytes != 1<<20 {
			t.Errorf("boot %+v: want image %s of 1 MiB", b, imageID)
		}
	}
	if want := "first/spawn second/spawn first/power_on"; strings.Join(got, " ") != want {
		t.Errorf("recorded boots %v, want %s", got, want)
	}
}

// stillQueued waits until server id has status and task state (it reached
// the driver's queue), then checks that it keeps them for a while: a guest
// that got a slot would be ACTIVE within a few seconds.
func stillQueued(t *testing.T, ctx context.Context, c *testenv.Cloud, id, status, task string) {
	t.Helper()
	seen := 0
	for seen < 8 {
		s, err := servers.Get(ctx, c.Compute, id).Extract()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case s.Status == status && s.TaskState == task:
			seen++
		case seen > 0 || s.Status != status:
			t.Fatalf("server %s is %s (task %q) while another guest runs; want %s (task %q)",
				s.Name, s.Status, s.TaskState, status, task)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("server %s: %v", s.Name, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}
