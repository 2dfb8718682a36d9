package testenv

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/runner-image-builder/github-runner-image-builder/internal/clock"
)

// UploadTestImage uploads the test guest image (TestImage) to cloud as a
// private qcow2/bare image named name, with props and grib_test_guest=true,
// waits until it is active and returns its ID. A cleanup deletes it. Servers
// booted from it run a real guest: cloud-init (config drive), sshd, user
// "ubuntu" with passwordless sudo.
func UploadTestImage(t testing.TB, ctx context.Context, cloud, name string, props map[string]string) string {
	t.Helper()
	path := RequireImage(t)
	c := MustConnect(t, ctx, cloud)
	all := map[string]string{GuestProperty: "true"}
	for k, v := range props {
		all[k] = v
	}
	id, err := UploadImage(ctx, c.Image, name, path, "qcow2", all)
	if id != "" {
		t.Cleanup(func() {
			cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := images.Delete(cctx, c.Image, id).ExtractErr(); err != nil && !isNotFound(err) {
				t.Errorf("testenv: delete test image %s: %v", id, err)
			}
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// UploadImage creates an image (diskFormat "qcow2" or "raw", container bare)
// from the file at path and waits until it is active. On error it returns the
// image ID if the image was created, so that the caller can delete it.
func UploadImage(ctx context.Context, image *gophercloud.ServiceClient, name, path, diskFormat string, props map[string]string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("testenv: open image file: %w", err)
	}
	defer f.Close()
	im, err := images.Create(ctx, image, images.CreateOpts{
		Name: name, DiskFormat: diskFormat, ContainerFormat: "bare", Properties: props,
	}).Extract()
	if err != nil {
		return "", fmt.Errorf("testenv: create image %q: %w", name, err)
	}
	if err := imagedata.Upload(ctx, image, im.ID, f).ExtractErr(); err != nil {
		return im.ID, fmt.Errorf("testenv: upload %s to image %q: %w", path, name, err)
	}
	_, err = WaitImage(ctx, image, im.ID)
	return im.ID, err
}

// WaitImage polls an image until it is active; it fails when the image is
// killed or deleted, and when ctx ends.
func WaitImage(ctx context.Context, image *gophercloud.ServiceClient, id string) (*images.Image, error) {
	for {
		im, err := images.Get(ctx, image, id).Extract()
		if err != nil {
			return nil, fmt.Errorf("testenv: get image %s: %w", id, err)
		}
		switch im.Status {
		case images.ImageStatusActive:
			return im, nil
		case images.ImageStatusKilled, images.ImageStatusDeleted, images.ImageStatusPendingDelete:
			return im, fmt.Errorf("testenv: image %s is %s", id, im.Status)
		}
		if err := clock.Sleep(ctx, time.Second); err != nil {
			return im, fmt.Errorf("testenv: image %s is %s, waiting for active: %w", id, im.Status, err)
		}
	}
}

// ImagesNamed lists the images called name that the client's project sees.
func ImagesNamed(ctx context.Context, image *gophercloud.ServiceClient, name string) ([]images.Image, error) {
	pages, err := images.List(image, images.ListOpts{Name: name}).AllPages(ctx)
	if err != nil {
		return nil, fmt.Errorf("testenv: list images named %q: %w", name, err)
	}
	return images.ExtractImages(pages)
}
