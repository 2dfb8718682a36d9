package testenv_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/keypairs"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"golang.org/x/crypto/ssh"

	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// TestRealGuestLifecycle is issue 3's proof that the test OpenStack runs real
// guests: boot the test image on it-net, SSH to the fixed address (host key
// checked against the console), write a marker, stop, snapshot, download the
// snapshot and find the marker in its filesystem without booting it.
func TestRealGuestLifecycle(t *testing.T) {
	testenv.RequireImage(t)
	for _, tool := range []string{"qemu-img", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed on the host: %v", tool, err)
		}
	}
	prefix := testenv.Prefix(t)
	// Run with go test -timeout 30m or more: a guest boot takes about a minute
	// under TCG, and the guest may first wait for another test's guest.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Minute)
	defer cancel()

	c := testenv.MustConnect(t, ctx, testenv.BuildCloud)
	imageID := testenv.UploadTestImage(t, ctx, testenv.BuildCloud, prefix+"-base", nil)

	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	keyName := prefix + "-key"
	if _, err := keypairs.Create(ctx, c.Compute, keypairs.CreateOpts{
		Name: keyName, PublicKey: string(ssh.MarshalAuthorizedKey(signer.PublicKey())),
	}).Extract(); err != nil {
		t.Fatalf("import keypair: %v", err)
	}
	t.Cleanup(func() {
		if err := keypairs.Delete(context.Background(), c.Compute, keyName, nil).ExtractErr(); err != nil {
			t.Errorf("delete keypair: %v", err)
		}
	})

	netID := networkID(t, ctx, c)
	flavorID := flavorID(t, ctx, c, testenv.FlavorMin)
	srv, err := servers.Create(ctx, c.Compute, keypairs.CreateOptsExt{
		KeyName: keyName,
		CreateOptsBuilder: servers.CreateOpts{
			Name: prefix + "-vm", ImageRef: imageID, FlavorRef: flavorID,
			Networks: []servers.Network{{UUID: netID}},
			UserData: []byte("#cloud-config\nruncmd:\n  - [sh, -c, 'echo user-data-ran > /var/tmp/grib-user-data']\n"),
		},
	}, nil).Extract()
	if err != nil {
		t.Fatalf("create server: %v", err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer ccancel()
		if err := testenv.DeleteServer(cctx, c.Compute, srv.ID); err != nil {
			t.Errorf("delete server: %v", err)
		}
	})
	started := time.Now()
	active, err := testenv.WaitServer(ctx, c.Compute, srv.ID, "ACTIVE")
	if err != nil {
		t.Fatal(err)
	}
	ip, err := testenv.FixedIPv4(active, testenv.Network)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ip, "127.77.0.") {
		t.Fatalf("fixed address %s is not on the loopback subnet 127.77.0.0/24", ip)
	}

	hostKeys, console, err := testenv.WaitConsoleHostKeys(ctx, c.Compute, srv.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(console, "Cloud-init") {
		t.Errorf("console output does not look like the guest's serial console:\n%s", tail(console, 20))
	}
	client, err := testenv.DialGuest(ctx, ip+":22", "ubuntu", signer, hostKeys)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guest answered SSH on %s:22 %s after create", ip, time.Since(started).Round(time.Second))
	defer client.Close()
	run := func(cmd string) string {
		t.Helper()
		out, err := testenv.Run(ctx, client, cmd)
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return out
	}
	// cloud-init read the config drive, and the guest kept qemu's user network
	// (no network_data.json on the drive): DHCP gave it qemu's 10.0.2.15.
	if out := run("cloud-init status --wait --long"); !strings.Contains(out, "DataSourceConfigDrive") {
		t.Errorf("cloud-init's datasource is not the config drive:\n%s", out)
	}
	if out := run("ip -4 -o addr show scope global"); !strings.Contains(out, " 10.0.2.15/24 ") {
		t.Errorf("the guest has no address from qemu's user network:\n%s", out)
	}
	if out := run("cat /var/tmp/grib-user-data"); strings.TrimSpace(out) != "user-data-ran" {
		diag, _ := testenv.Run(ctx, client, "ls -l --full-time /var/tmp/; cloud-init status --long; sudo tail -n 30 /var/log/cloud-init-output.log; sudo grep -i -E 'runcmd|scripts.user|user.data' /var/log/cloud-init.log | tail -n 30")
		t.Errorf("user-data from the config drive did not run; got %q\n%s", out, diag)
	}
	marker := "grib-marker-" + prefix
	run("echo " + marker + " | sudo tee /var/lib/grib-marker >/dev/null && sync")
	client.Close()

	short, err := servers.ShowConsoleOutput(ctx, c.Compute, srv.ID, servers.ShowConsoleOutputOpts{Length: 5}).Extract()
	if err != nil {
		t.Fatalf("console output: %v", err)
	}
	if n := strings.Count(strings.TrimRight(short, "\n"), "\n") + 1; short == "" || n > 5 {
		t.Errorf("console output with length 5 has %d lines:\n%s", n, short)
	}

	if err := servers.Stop(ctx, c.Compute, srv.ID).ExtractErr(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := testenv.WaitServer(ctx, c.Compute, srv.ID, "SHUTOFF"); err != nil {
		t.Fatal(err)
	}
	snapID, err := servers.CreateImage(ctx, c.Compute, srv.ID, servers.CreateImageOpts{Name: prefix + "-snap"}).ExtractImageID()
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	t.Cleanup(func() {
		if err := images.Delete(context.Background(), c.Image, snapID).ExtractErr(); err != nil {
			t.Errorf("delete snapshot: %v", err)
		}
	})
	snap, err := testenv.WaitImage(ctx, c.Image, snapID)
	if err != nil {
		t.Fatal(err)
	}
	if snap.DiskFormat != "qcow2" || snap.ContainerFormat != "bare" {
		t.Errorf("snapshot is %s/%s, want qcow2/bare", snap.DiskFormat, snap.ContainerFormat)
	}

	got := markerInImage(t, ctx, c, snapID, "/var/lib/grib-marker")
	if strings.TrimSpace(got) != marker {
		t.Errorf("marker in the snapshot = %q, want %q", got, marker)
	}

	boots, err := testenv.GuestBoots(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(boots) != 1 || boots[0].ServerID != srv.ID || boots[0].Kind != "spawn" || boots[0].ImageID != imageID {
		t.Errorf("recorded boots %+v, want one spawn of server %s", boots, srv.ID)
	}
}

func networkID(t *testing.T, ctx context.Context, c *testenv.Cloud) string {
	t.Helper()
	pages, err := networks.List(c.Network, networks.ListOpts{Name: testenv.Network}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nets, err := networks.ExtractNetworks(pages)
	if err != nil || len(nets) != 1 {
		t.Fatalf("network %s: %d found, %v", testenv.Network, len(nets), err)
	}
	return nets[0].ID
}

func flavorID(t *testing.T, ctx context.Context, c *testenv.Cloud, name string) string {
	t.Helper()
	pages, err := flavors.ListDetail(c.Compute, nil).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all, err := flavors.ExtractFlavors(pages)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range all {
		if f.Name == name {
			return f.ID
		}
	}
	t.Fatalf("flavor %s not found", name)
	return ""
}

// markerInImage downloads a qcow2 image, converts it to raw and reads path
// from the ext4 filesystem of its first partition with debugfs (no boot, no mount).
func markerInImage(t *testing.T, ctx context.Context, c *testenv.Cloud, imageID, path string) string {
	t.Helper()
	dir := t.TempDir()
	qcow := filepath.Join(dir, "snap.qcow2")
	raw := filepath.Join(dir, "snap.raw")
	body, err := imagedata.Download(ctx, c.Image, imageID).Extract()
	if err != nil {
		t.Fatalf("download snapshot: %v", err)
	}
	f, err := os.Create(qcow)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(f, body)
	body.Close()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("download snapshot: %v", err)
	}
	if out, err := exec.CommandContext(ctx, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", qcow, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}
	offset := firstPartitionOffset(t, raw)
	out, err := exec.CommandContext(ctx, "debugfs", "-R", "cat "+path, fmt.Sprintf("%s?offset=%d", raw, offset)).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return string(out)
}

// firstPartitionOffset reads the MBR partition table: byte offset of partition 1.
func firstPartitionOffset(t *testing.T, raw string) int64 {
	t.Helper()
	f, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mbr := make([]byte, 512)
	if _, err := io.ReadFull(f, mbr); err != nil {
		t.Fatal(err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xAA {
		t.Fatal("snapshot has no MBR partition table")
	}
	lba := binary.LittleEndian.Uint32(mbr[446+8 : 446+12])
	if lba == 0 {
		t.Fatal("snapshot's first partition is empty")
	}
	return int64(lba) * 512
}

func tail(s string, lines int) string {
	all := strings.Split(s, "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}
