package builder

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"maps"
	"os"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
	"github.com/runner-image-builder/github-runner-image-builder/internal/release"
)

// Cloud is what the openstack builder needs of one cloud (one project);
// *openstack.Cloud implements it.
type Cloud interface {
	Name() string
	ProjectID() string
	openstack.Servers
	openstack.Images
	openstack.Keypairs
	openstack.SecurityGroups
	openstack.Selection
}

// Connector opens a cloud by its clouds.yaml name.
type Connector func(ctx context.Context, cloud string, log *slog.Logger) (Cloud, error)

// ConnectClouds is the real Connector, the one way the tool opens a cloud:
// clouds.yaml is read from the first of paths that exists (see
// openstack.CloudsPaths for the openstack CLI's search path), and every
// request goes through proxy (zero: the environment's proxy); auth, when
// set, shares authentications between the connections (see openstack.AuthCache).
func ConnectClouds(paths []string, proxy config.HostProxy, auth *openstack.AuthCache) Connector {
	oc := openstack.Connector{Paths: paths, Proxy: proxy.ProxyFunc(), Auth: auth,
		AuthScope: proxy.HTTP + "\x00" + proxy.HTTPS + "\x00" + proxy.NoProxy}
	return func(ctx context.Context, cloud string, log *slog.Logger) (Cloud, error) {
		c, err := oc.Connect(ctx, cloud, log)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}

// The image properties the builder sets. The first four are what
// consumers (GARM, Nova's scheduler) read; the grib_ ones are ours.
const (
	PropArchitecture = "architecture"
	PropOSDistro     = "os_distro"
	PropOSVersion    = "os_version"
	PropOSType       = "os_type"

	// PropPublished marks an image this tool published (verified, copied,
	// described): only such images are pruned.
	PropPublished = config.ReservedPropertyPrefix + "published"
	// PropBuildID links the images, server and leftovers of one build.
	PropBuildID        = config.ReservedPropertyPrefix + "build_id"
	PropPrefix         = config.ReservedPropertyPrefix + "prefix"
	PropBase           = config.ReservedPropertyPrefix + "base"
	PropArch           = config.ReservedPropertyPrefix + "arch"
	PropRunnerVersion  = config.ReservedPropertyPrefix + "runner_version"
	PropBuildTime      = config.ReservedPropertyPrefix + "build_time"
	PropBuilderVersion = config.ReservedPropertyPrefix + "builder_version"
	// PropBaseSHA256 is the SHA-256 of the file a base image was uploaded from.
	PropBaseSHA256 = config.ReservedPropertyPrefix + "base_sha256"
	// PropManifestSHA256 is the SHA-256 of the image's manifest file
	// (manifest.GuestPath in the image, and the copy the host keeps).
	PropManifestSHA256 = config.ReservedPropertyPrefix + "manifest_sha256"
)

// builderProperties are the grib_ properties the builder sets itself.
func builderProperties() []string {
	return []string{PropPublished, PropBuildID, PropPrefix, PropBase, PropArch, PropRunnerVersion,
		PropBuildTime, PropBuilderVersion, PropBaseSHA256, PropManifestSHA256}
}

// osProperties are the properties consumers read, for an arch and base.
func osProperties(a config.Arch, b config.Base) map[string]string {
	return map[string]string{
		PropArchitecture: a.OpenStack(),
		PropOSDistro:     "ubuntu",
		PropOSVersion:    b.Version(),
		PropOSType:       "linux",
	}
}

// buildInfo is what one build records on its images.
type buildInfo struct {
	ID             string
	Prefix         string
	Arch           config.Arch
	Base           config.Base
	RunnerVersion  string // "" when --user-data replaced the recipe and nothing was pinned
	Time           time.Time
	BuilderVersion string
}

func newBuildInfo(spec config.RunSpec, runner release.Release, now time.Time, version string) buildInfo {
	return buildInfo{
		ID: newBuildID(), Prefix: spec.Prefix, Arch: spec.Arch, Base: spec.Base,
		RunnerVersion: runner.Version, Time: now, BuilderVersion: version,
	}
}

// imageProperties are the properties of a build's images. published adds
// the marker that makes an image ours for pruning; images still being
// built or copied go without it.
func (b buildInfo) imageProperties(published bool) map[string]string {
	p := osProperties(b.Arch, b.Base)
	maps.Copy(p, map[string]string{
		PropBuildID:        b.ID,
		PropPrefix:         b.Prefix,
		PropBase:           string(b.Base),
		PropArch:           string(b.Arch),
		PropBuildTime:      b.Time.UTC().Format(time.RFC3339),
		PropBuilderVersion: b.BuilderVersion,
	})
	if b.RunnerVersion != "" {
		p[PropRunnerVersion] = b.RunnerVersion
	}
	if published {
		p[PropPublished] = "true"
	}
	return p
}

// newBuildID returns 16 random hex digits.
func newBuildID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // never fails on Linux
	return hex.EncodeToString(b)
}

func getenvOr(getenv func(string) string) func(string) string {
	if getenv == nil {
		return os.Getenv
	}
	return getenv
}
