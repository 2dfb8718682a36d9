package builder

import (
	"context"
	"maps"
	"testing"
)

// Every property of the build cloud's image that a consumer reads travels
// with its copies; none that describes its place in the build cloud does.
func TestCarriedProperties(t *testing.T) {
	tests := []struct {
		key     string
		carried bool
	}{
		// What Nova, GARM and operators read.
		{"architecture", true},
		{"os_distro", true},
		{"os_version", true},
		{"os_type", true},
		{"os_require_quiesce", true},
		{"os_secure_boot", true},
		{"hw_firmware_type", true},
		{"hw_machine_type", true},
		{"hw_disk_bus", true},
		{"hw_qemu_guest_agent", true},
		{"img_config_drive", true},
		{"trait:CUSTOM_RUNNER", true},
		{"description", true},
		{"site_owner", true}, // a --base-image-property
		{PropBaseSHA256, true},
		{PropPrefix, true},
		{PropBuildID, true},
		// What belongs to the build cloud's image.
		{"instance_uuid", false},
		{"base_image_ref", false},
		{"image_type", false},
		{"image_location", false},
		{"image_state", false},
		{"user_id", false},
		{"owner_id", false},
		{"owner_project_name", false},
		{"owner_user_name", false},
		{"boot_roles", false},
		{"block_device_mapping", false},
		{"bdm_v2", false},
		{"root_device_name", false},
		{"stores", false},
		{"direct_url", false},
		{"os_hash_algo", false},
		{"os_hash_value", false},
		{"os_hidden", false},
		{"os_glance_importing_to_stores", false},
		{"owner_specified.openstack.sha256", false},
		{"img_signature", false},
		{"img_signature_certificate_uuid", false},
		{"kernel_id", false},
		{"ramdisk_id", false},
		{"instance_type_name", false},
		{"cinder_encryption_key_id", false},
		{"clean_attempts", false},
		{PropPublished, false}, // set on the copy when it is published
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			got := carriedProperties(map[string]string{tt.key: "v"}, nil)
			if _, ok := got[tt.key]; ok != tt.carried {
				t.Errorf("%s carried = %v, want %v", tt.key, ok, tt.carried)
			}
		})
	}
}

// The build's own properties win over the source's.
func TestCarriedPropertiesOwnWin(t *testing.T) {
	got := carriedProperties(map[string]string{PropPrefix: "base-prefix", "os_version": "0", "hw_rng_model": "virtio"},
		map[string]string{PropPrefix: "p", "os_version": "24.04"})
	want := map[string]string{PropPrefix: "p", "os_version": "24.04", "hw_rng_model": "virtio"}
	if !maps.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// A copy carries the snapshot's hw_ and base properties, drops its
// cloud's own, and is hidden until it is published: after the copy step
// no listing of its name shows it, after publish every listing does.
func TestCopyCarriesPropertiesHiddenUntilPublished(t *testing.T) {
	b, clouds := publishFixture(t, "east")
	ctx := context.Background()
	for k, v := range map[string]string{"hw_firmware_type": "uefi", "site_owner": "ci", PropBaseSHA256: "abc",
		"instance_uuid": "server-1", "base_image_ref": "base-1", "owner_project_name": "build"} {
		b.snapshot.Properties[k] = v
	}
	attachPublication(b)
	if err := b.copy(ctx); err != nil {
		t.Fatal(err)
	}
	east := clouds["east"]
	id := b.pub.copies.done["east"].image.ID
	im, err := east.GetImage(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"hw_firmware_type": "uefi", "site_owner": "ci", PropBaseSHA256: "abc",
		"os_version": "24.04", PropBuildID: "b1"} {
		if im.Properties[k] != v {
			t.Errorf("copy: %s = %q, want %q", k, im.Properties[k], v)
		}
	}
	for _, k := range []string{"instance_uuid", "base_image_ref", "owner_project_name", PropPublished} {
		if _, ok := im.Properties[k]; ok {
			t.Errorf("copy carries %s", k)
		}
	}
	listed := func() bool {
		ims, err := east.ListImagesByName(ctx, b.spec.ImageName, false)
		if err != nil {
			t.Fatal(err)
		}
		return len(ims) == 1 && ims[0].ID == id
	}
	if !im.Hidden || listed() {
		t.Errorf("checked but unpublished copy: hidden %v, listed %v; want hidden, not listed", im.Hidden, listed())
	}
	if err := b.pub.publish(ctx); err != nil {
		t.Fatal(err)
	}
	if im, _ := east.GetImage(ctx, id); im.Hidden || !listed() || im.Properties[PropPublished] != "true" {
		t.Errorf("published copy: hidden %v, listed %v, %s %q", im.Hidden, listed(), PropPublished, im.Properties[PropPublished])
	}
}
