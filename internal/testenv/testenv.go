// Package testenv is the integration-test harness: it gates tests on the
// real OpenStack that .ci/openstack-up.sh starts on 127.0.0.1, connects to its
// clouds, gives each test its own resource prefix and checks that nothing the
// test created is left behind in any cloud.
//
// Integration tests call Require first; without GRIB_IT=1 they skip, so a plain
// `go test ./...` needs no cloud. With GRIB_IT=1 a missing stack fails the test
// instead: CI promised a cloud, so its absence is an error, not a skip.
//
// The clouds (see .ci/openstack-up.sh): it-admin (admin, used by the harness),
// it-a (the build cloud), it-b and it-c (upload clouds); each test cloud is its
// own project with its own member user. All share the network it-net, whose
// subnet 127.77.0.0/24 keeps every fixed address on loopback. Images with the
// property grib_test_guest=true boot real qemu guests (see
// .ci/harness/grib_qemu_virt.py); SSH to a server's fixed address reaches it.
// The driver records every guest boot in GuestBootsFile (see GuestBoots), so
// CI can count boots, per test by prefix.
package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/config"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
)

// Names of the things .ci/openstack-up.sh creates.
const (
	AdminCloud  = "it-admin" // admin of the test OpenStack: harness and leak checks only
	BuildCloud  = "it-a"     // the operator's build cloud (project it-a, member role)
	UploadCloud = "it-b"     // an upload cloud (project it-b)
	OtherCloud  = "it-c"     // a second upload cloud (project it-c)
	// NoConsoleCloud is a build cloud (project it-d, member role) whose Nova
	// policy forbids os-console-output, as some clouds do.
	NoConsoleCloud = "it-d"
	Network        = "it-net"   // the one shared network; subnet 127.77.0.0/24, no DHCP
	FlavorMin      = "it.min"   // 2 vCPU, 1024 MiB, 20 GiB: exactly the builder's minimum
	FlavorSmall    = "it.small" // 1 vCPU, 1024 MiB, 10 GiB: below the minimum

	// GuestProperty marks an image whose servers boot a real qemu guest.
	GuestProperty = "grib_test_guest"
	// FailSpawnProperty marks an image whose servers go ERROR with a fault.
	FailSpawnProperty = "grib_test_fail_spawn"

	DefaultCloudsFile = "/var/lib/grib-openstack/clouds.yaml"
	DefaultImageDir   = "/var/cache/grib-test-image"
	testImageName     = "debian-12-grib-test.qcow2"
)

// Enabled reports whether integration tests are on (GRIB_IT=1).
func Enabled() bool { return os.Getenv("GRIB_IT") == "1" }

// CloudsFile is the clouds.yaml of the test OpenStack: $GRIB_IT_CLOUDS, else
// DefaultCloudsFile.
func CloudsFile() string {
	if p := os.Getenv("GRIB_IT_CLOUDS"); p != "" {
		return p
	}
	return DefaultCloudsFile
}

// TestImage is the path of the guest image .ci/make-test-image.sh builds:
// $GRIB_TEST_IMAGE if set, else debian-12-grib-test.qcow2 in
// $GRIB_TEST_IMAGE_DIR (default DefaultImageDir).
func TestImage() string {
	if p := os.Getenv("GRIB_TEST_IMAGE"); p != "" {
		return p
	}
	dir := os.Getenv("GRIB_TEST_IMAGE_DIR")
	if dir == "" {
		dir = DefaultImageDir
	}
	return filepath.Join(dir, testImageName)
}

// Require skips t unless GRIB_IT=1, and fails it when GRIB_IT=1 but the
// clouds file is missing.
func Require(t testing.TB) {
	t.Helper()
	skip, err := requirement(Enabled(), CloudsFile())
	if skip != "" {
		t.Skip(skip)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// RequireImage is Require plus the guest image; it returns the image path.
func RequireImage(t testing.TB) string {
	t.Helper()
	Require(t)
	p := TestImage()
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("testenv: the test guest image is missing (%v): run .ci/make-test-image.sh", err)
	}
	return p
}

// requirement decides Require: a skip reason, or an error, or neither.
func requirement(enabled bool, cloudsFile string) (skip string, err error) {
	if !enabled {
		return "integration test: set GRIB_IT=1 with the .ci OpenStack running (.ci/openstack-up.sh)", nil
	}
	if _, statErr := os.Stat(cloudsFile); statErr != nil {
		return "", fmt.Errorf("testenv: GRIB_IT=1 but the test OpenStack's clouds.yaml is missing (%w): run .ci/openstack-up.sh", statErr)
	}
	return "", nil
}

// Cloud is an authenticated connection to one cloud of the test OpenStack.
type Cloud struct {
	Name     string
	Provider *gophercloud.ProviderClient
	Compute  *gophercloud.ServiceClient // microversion 2.90
	Image    *gophercloud.ServiceClient
	Network  *gophercloud.ServiceClient
	Identity *gophercloud.ServiceClient

	endpoints gophercloud.EndpointOpts
}

// Connect authenticates to the named cloud of CloudsFile with gophercloud.
func Connect(ctx context.Context, name string) (*Cloud, error) {
	ao, eo, tlsCfg, err := clouds.Parse(clouds.WithLocations(CloudsFile()), clouds.WithCloudName(name))
	if err != nil {
		return nil, fmt.Errorf("testenv: cloud %q in %s: %w", name, CloudsFile(), err)
	}
	ao.AllowReauth = true
	pc, err := config.NewProviderClient(ctx, ao, config.WithTLSConfig(tlsCfg))
	if err != nil {
		return nil, fmt.Errorf("testenv: authenticate to cloud %q: %w", name, err)
	}
	c := &Cloud{Name: name, Provider: pc, endpoints: eo}
	if c.Compute, err = openstack.NewComputeV2(pc, eo); err != nil {
		return nil, fmt.Errorf("testenv: cloud %q compute endpoint: %w", name, err)
	}
	c.Compute.Microversion = "2.90"
	if c.Image, err = openstack.NewImageV2(pc, eo); err != nil {
		return nil, fmt.Errorf("testenv: cloud %q image endpoint: %w", name, err)
	}
	if c.Network, err = openstack.NewNetworkV2(pc, eo); err != nil {
		return nil, fmt.Errorf("testenv: cloud %q network endpoint: %w", name, err)
	}
	if c.Identity, err = openstack.NewIdentityV3(pc, eo); err != nil {
		return nil, fmt.Errorf("testenv: cloud %q identity endpoint: %w", name, err)
	}
	return c, nil
}

// MustConnect is Connect that fails t on error.
func MustConnect(t testing.TB, ctx context.Context, name string) *Cloud {
	t.Helper()
	c, err := Connect(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// isNotFound reports whether err is an HTTP 404 from OpenStack.
func isNotFound(err error) bool {
	return err != nil && gophercloud.ResponseCodeIs(err, 404)
}
