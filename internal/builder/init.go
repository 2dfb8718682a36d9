package builder

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha512"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/baseimage"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
	"github.com/runner-image-builder/github-runner-image-builder/internal/statedir"
)

// BaseImageCacheDir is where init keeps verified base images under the
// --cache-dir of an InitSpec.
func BaseImageCacheDir(cacheDir string) string { return filepath.Join(cacheDir, "base-images") }

// BaseImageSpecs turns an InitSpec into the base images to fetch.
func BaseImageSpecs(spec config.InitSpec) []baseimage.Spec {
	out := make([]baseimage.Spec, 0, len(spec.Bases))
	for _, b := range spec.Bases {
		out = append(out, baseimage.Spec{Base: b, Arch: spec.Arch, Serial: spec.BaseImageSerial,
			File: spec.BaseImageFile, SHA256: spec.BaseImageSHA256})
	}
	return out
}

// Init seeds spec.Cloud for builds of spec.Arch: for each base, the verified
// Ubuntu image uploaded to Glance as config.BaseImageName (one revision
// kept; an image already uploaded from the same file is reused), then the
// prefix's keypair (this host's key) and security group. Concurrent inits
// on this host serialise per prefix and arch; inits elsewhere are safe too
// (each keeps the newest active revision, keypair and security group
// creation tolerate races).
func (o *OpenStack) Init(ctx context.Context, log *slog.Logger, spec config.InitSpec) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := spec.Validate(); err != nil {
		return err
	}
	if spec.Builder != config.BuilderOpenStack {
		return errs.New(errs.KindInternal, "the openstack builder was given a %s init", spec.Builder)
	}
	for k := range spec.BaseImageProperties {
		if slices.Contains(builderProperties(), k) {
			return errs.Usage("--base-image-property %s: the builder sets this property itself", k)
		}
	}
	dir, err := config.StateDir(o.getenv(), spec.Prefix)
	if err != nil {
		return err
	}
	fetcher := &baseimage.Fetcher{Mirror: spec.BaseImageURL, CacheDir: BaseImageCacheDir(spec.CacheDir), Log: log, StateDir: dir, Proxy: spec.HostProxy.ProxyFunc()}
	var imgs []baseimage.Image
	for _, s := range BaseImageSpecs(spec) {
		img, err := fetcher.Fetch(ctx, s)
		if err != nil {
			return fmt.Errorf("base image %s %s: %w", s.Base, s.Arch, err)
		}
		imgs = append(imgs, img)
	}

	unlock, err := statedir.Lock(ctx, filepath.Join(dir, fmt.Sprintf("init-%s.lock", spec.Arch)))
	if err != nil {
		return err
	}
	defer unlock()
	key, err := statedir.EnsureKey(ctx, dir)
	if err != nil {
		return err
	}

	c, err := o.dial(ctx, spec.Cloud, spec.CloudsPaths, spec.HostProxy, log)
	if err != nil {
		return err
	}
	for i, b := range spec.Bases {
		if err := o.uploadBase(ctx, log, c, spec, b, imgs[i]); err != nil {
			return err
		}
	}
	if err := ensureKeypair(ctx, c, config.KeypairName(spec.Prefix), key, log); err != nil {
		return err
	}
	if _, err := c.EnsureSecurityGroup(ctx, config.SecurityGroupName(spec.Prefix), securityGroupDescription); err != nil {
		return err
	}
	log.Info("init done", "cloud", spec.Cloud, "prefix", spec.Prefix, "arch", string(spec.Arch),
		"keypair", config.KeypairName(spec.Prefix), "security_group", config.SecurityGroupName(spec.Prefix))
	return nil
}

// uploadBase makes img the one active revision of the base image of b.
func (o *OpenStack) uploadBase(ctx context.Context, log *slog.Logger, c Cloud, spec config.InitSpec, b config.Base, img baseimage.Image) (err error) {
	name := config.BaseImageName(spec.Prefix, b, spec.Arch)
	props := osProperties(spec.Arch, b)
	maps.Copy(props, spec.BaseImageProperties)
	props[PropBaseSHA256] = img.SHA256
	props[PropPrefix] = spec.Prefix

	existing, err := c.ListImagesByName(ctx, name, true)
	if err != nil {
		return err
	}
	var keep *openstack.Image
	for i := range existing {
		im := &existing[i]
		if im.Owner == c.ProjectID() && im.Properties[PropBaseSHA256] == img.SHA256 && sameProperties(im.Properties, props) {
			keep = im
			log.Info("base image up to date", "image", name, "id", im.ID, "sha256", img.SHA256)
			break
		}
	}
	if keep == nil {
		if keep, err = uploadFile(ctx, log, c, name, img.Path, props); err != nil {
			return err
		}
	}
	// Keep one revision: remove the others of this project (only active
	// ones; an upload in progress belongs to a concurrent init).
	for _, im := range existing {
		if im.ID == keep.ID || im.Owner != c.ProjectID() {
			continue
		}
		if err := c.DeleteImage(ctx, im.ID); err != nil {
			return err
		}
		log.Info("old base image removed", "image", name, "id", im.ID)
	}
	return nil
}

func sameProperties(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// uploadFile creates image name from the file at path (qcow2 or raw, by its
// header), waits until it is active and checks its size and checksums. A
// failed upload's image is deleted.
func uploadFile(ctx context.Context, log *slog.Logger, c Cloud, name, path string, props map[string]string) (_ *openstack.Image, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("base image %s: %w", name, err)
	}
	defer f.Close()
	format, err := diskFormat(f)
	if err != nil {
		return nil, fmt.Errorf("base image file %s: %w", path, err)
	}
	d, err := fileDigests(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("base image file %s: %w", path, err)
	}
	im, err := c.CreateImage(ctx, openstack.ImageSpec{Name: name, DiskFormat: format, ContainerFormat: "bare", Properties: props})
	if err != nil {
		return nil, errs.Wrap(errs.KindOf(err), err, "uploading base image %s", name)
	}
	defer func() {
		if err == nil {
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeoutDefault)
		defer cancel()
		if derr := c.DeleteImage(cctx, im.ID); derr != nil {
			err = errors.Join(err, fmt.Errorf("removing the failed upload %s: %w (left behind)", im.ID, derr))
		}
	}()
	log.Info("uploading base image", "image", name, "id", im.ID, "file", path, "bytes", d.Size, "disk_format", format)
	if err := c.UploadImage(ctx, im.ID, f); err != nil {
		return nil, errs.Wrap(errs.KindOf(err), err, "uploading base image %s", name)
	}
	active, err := c.WaitImageActive(ctx, im.ID)
	if err != nil {
		return nil, err
	}
	if err := d.matches(active); err != nil {
		return nil, errs.New(errs.KindPublish, "base image %s (%s) does not match %s: %v", name, im.ID, path, err)
	}
	log.Info("base image uploaded", "image", name, "id", im.ID)
	return active, nil
}

const cleanupTimeoutDefault = 5 * time.Minute // as Runner's default

// diskFormat tells qcow2 from raw by the file's magic.
func diskFormat(f io.ReaderAt) (string, error) {
	magic := make([]byte, 4)
	if _, err := f.ReadAt(magic, 0); err != nil {
		return "", fmt.Errorf("reading its header: %w", err)
	}
	if bytes.Equal(magic, []byte("QFI\xfb")) {
		return "qcow2", nil
	}
	return "raw", nil
}

// fileDigests hashes a file the way Glance does (md5 and sha512).
func fileDigests(ctx context.Context, f *os.File) (Digests, error) {
	m5, s512 := md5.New(), sha512.New()
	n, err := io.Copy(io.MultiWriter(m5, s512), ctxReader{ctx, io.NewSectionReader(f, 0, 1<<62)})
	if err != nil {
		return Digests{}, err
	}
	return Digests{Size: n, MD5: hexSum(m5), SHA512: hexSum(s512)}, nil
}
