package openstack

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// Glance image statuses.
const (
	ImageActive        = "active"
	ImageQueued        = "queued"
	ImageSaving        = "saving"
	ImageKilled        = "killed"
	ImageDeleted       = "deleted"
	ImagePendingDelete = "pending_delete"
)

// Images is what the builder needs of Glance.
type Images interface {
	CreateImage(ctx context.Context, spec ImageSpec) (*Image, error)
	UploadImage(ctx context.Context, id string, data io.ReadSeeker) error
	DownloadImage(ctx context.Context, id string) (io.ReadCloser, error)
	GetImage(ctx context.Context, id string) (*Image, error)
	ListImagesByName(ctx context.Context, name string, activeOnly bool) ([]Image, error)
	ListImages(ctx context.Context, q ImageQuery) ([]Image, error)
	UpdateImage(ctx context.Context, id string, u ImageUpdate) error
	DeleteImage(ctx context.Context, id string) error
	WaitImageActive(ctx context.Context, id string) (*Image, error)
	LatestImageID(ctx context.Context, name string, anyStatus bool) (string, error)
}

// ImageSpec describes an image record to create (data comes with UploadImage).
type ImageSpec struct {
	Name            string
	DiskFormat      string // e.g. qcow2, raw: always explicit
	ContainerFormat string // usually bare
	Visibility      string // private (default), shared, community, public
	Properties      map[string]string
	Tags            []string
	// Hidden creates the image with os_hidden: Glance leaves it out of
	// every listing that does not ask for hidden images.
	Hidden bool
}

// ImageUpdate is one change to an image, made in one PATCH.
type ImageUpdate struct {
	Properties map[string]string // added or replaced
	Visibility string            // "": unchanged
	Unhide     bool              // clear os_hidden
}

// Image is the part of a Glance image the builder reads.
type Image struct {
	ID              string
	Name            string
	Status          string
	SizeBytes       int64
	Checksum        string // md5, hex
	HashAlgo        string // os_hash_algo, e.g. sha512
	HashValue       string // os_hash_value, hex
	DiskFormat      string
	ContainerFormat string
	Visibility      string
	Hidden          bool // os_hidden
	Owner           string
	Tags            []string
	Properties      map[string]string // string-valued extra properties
	CreatedAt       time.Time
}

func toImage(im *images.Image) Image {
	out := Image{
		ID: im.ID, Name: im.Name, Status: string(im.Status), SizeBytes: im.SizeBytes,
		Checksum: im.Checksum, DiskFormat: im.DiskFormat, ContainerFormat: im.ContainerFormat,
		Visibility: string(im.Visibility), Hidden: im.Hidden, Owner: im.Owner, Tags: im.Tags, CreatedAt: im.CreatedAt,
		Properties: map[string]string{},
	}
	for k, v := range im.Properties {
		if s, ok := v.(string); ok {
			out.Properties[k] = s
		}
	}
	out.HashAlgo = out.Properties["os_hash_algo"]
	out.HashValue = out.Properties["os_hash_value"]
	delete(out.Properties, "os_hash_algo")
	delete(out.Properties, "os_hash_value")
	return out
}

// sortNewestFirst orders images by creation time, newest first; Glance
// stores seconds, so equal times are ordered by ID to stay deterministic.
func sortNewestFirst(ims []Image) {
	slices.SortFunc(ims, func(a, b Image) int {
		return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), strings.Compare(a.ID, b.ID))
	})
}

// CreateImage creates an image record (status queued). Never retried.
func (c *Cloud) CreateImage(ctx context.Context, spec ImageSpec) (*Image, error) {
	if spec.DiskFormat == "" || spec.ContainerFormat == "" {
		return nil, errs.New(errs.KindInternal, "image %s: disk and container formats must be explicit", spec.Name)
	}
	opts := images.CreateOpts{
		Name: spec.Name, DiskFormat: spec.DiskFormat, ContainerFormat: spec.ContainerFormat,
		Tags: spec.Tags, Properties: spec.Properties,
	}
	if spec.Visibility != "" {
		v := images.ImageVisibility(spec.Visibility)
		opts.Visibility = &v
	}
	if spec.Hidden {
		opts.Hidden = &spec.Hidden
	}
	im, err := images.Create(ctx, c.image, opts).Extract()
	if err != nil {
		return nil, classify(err, "create image "+spec.Name)
	}
	out := toImage(im)
	c.log.Info("image created", "image", spec.Name, "id", out.ID)
	return &out, nil
}

// UploadImage streams data into image id from its start. data must be
// seekable (an *os.File): if the token expires mid-upload, gophercloud
// re-authenticates and sends it again from the start. data is not closed;
// when it is an io.ReaderAt (an *os.File), concurrent uploads of one file
// are safe (each reads it at its own offsets).
func (c *Cloud) UploadImage(ctx context.Context, id string, data io.ReadSeeker) error {
	ra, ok := data.(io.ReaderAt)
	if !ok {
		if _, err := data.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("upload image %s: rewinding the data: %w", id, err)
		}
		ra = &seekReaderAt{rs: data}
	}
	what := "upload of image " + id
	rctx, w, stop := watchTransfer(ctx, what, c.transferIdle)
	defer stop()
	body := newUploadBody(ra)
	body.watch = w
	if err := imagedata.Upload(rctx, c.image, id, body).ExtractErr(); err != nil {
		if se := stalled(rctx); se != nil {
			err = se
		}
		return classify(err, "upload image "+id)
	}
	return nil
}

// DownloadImage streams image id's data; the caller closes it. A body on
// which the cloud sends nothing for the transfer idle timeout
// (TransferIdleTimeout) fails with a *StalledError.
func (c *Cloud) DownloadImage(ctx context.Context, id string) (io.ReadCloser, error) {
	rctx, w, stop := watchTransfer(ctx, "download of image "+id, c.transferIdle)
	r := imagedata.Download(rctx, c.image, id)
	if r.Err != nil {
		stop()
		return nil, classify(r.Err, "download image "+id)
	}
	return &watchedBody{body: r.Body, rctx: rctx, w: w, stop: stop}, nil
}

// GetImage reads one image; a missing one is errs.KindNotFound.
func (c *Cloud) GetImage(ctx context.Context, id string) (*Image, error) {
	var out Image
	err := Retry(ctx, c.log, "get image", func(ctx context.Context) error {
		im, err := images.Get(ctx, c.image, id).Extract()
		if err != nil {
			return err
		}
		out = toImage(im)
		return nil
	})
	if err != nil {
		return nil, classify(err, "get image "+id)
	}
	return &out, nil
}

// ImageQuery filters an image list. Glance filters on any property with
// ?<property>=<value>, which gophercloud's ListOpts cannot express.
type ImageQuery struct {
	Name       string            // exact name
	Status     string            // e.g. active
	Owner      string            // project ID
	Visibility string            // all, public, private, shared, community
	Properties map[string]string // exact values
	Tags       []string          // all must be present
	// IncludeHidden lists hidden (os_hidden) images too; Glance's own
	// listing leaves them out.
	IncludeHidden bool

	onlyHidden bool // the second listing of IncludeHidden
}

// ToImageListQuery implements images.ListOptsBuilder.
func (q ImageQuery) ToImageListQuery() (string, error) {
	v := url.Values{}
	for _, k := range slices.Sorted(maps.Keys(q.Properties)) {
		v.Set(k, q.Properties[k])
	}
	set := func(k, val string) {
		if val != "" {
			v.Set(k, val)
		}
	}
	set("name", q.Name)
	set("status", q.Status)
	set("owner", q.Owner)
	set("visibility", q.Visibility)
	if q.onlyHidden {
		v.Set("os_hidden", "true")
	}
	for _, t := range q.Tags {
		v.Add("tag", t)
	}
	if len(v) == 0 {
		return "", nil
	}
	return "?" + v.Encode(), nil
}

// ListImages lists the images matching q, newest first (ties by ID).
// With q.IncludeHidden it lists twice (Glance lists either the hidden
// images or the others) and returns both.
func (c *Cloud) ListImages(ctx context.Context, q ImageQuery) ([]Image, error) {
	out, err := c.listImages(ctx, q)
	if err != nil {
		return nil, err
	}
	if q.IncludeHidden {
		q.onlyHidden = true
		hidden, err := c.listImages(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, im := range hidden {
			if !slices.ContainsFunc(out, func(o Image) bool { return o.ID == im.ID }) {
				out = append(out, im)
			}
		}
	}
	sortNewestFirst(out)
	return out, nil
}

func (c *Cloud) listImages(ctx context.Context, q ImageQuery) ([]Image, error) {
	var out []Image
	err := Retry(ctx, c.log, "list images", func(ctx context.Context) error {
		pages, err := images.List(c.image, q).AllPages(ctx)
		if err != nil {
			return err
		}
		all, err := images.ExtractImages(pages)
		if err != nil {
			return err
		}
		out = make([]Image, 0, len(all))
		for i := range all {
			out = append(out, toImage(&all[i]))
		}
		return nil
	})
	if err != nil {
		return nil, classify(err, "list images")
	}
	return out, nil
}

// ListImagesByName lists the images visible to the project with exactly this
// name, newest first (ties by ID); activeOnly keeps only active ones.
func (c *Cloud) ListImagesByName(ctx context.Context, name string, activeOnly bool) ([]Image, error) {
	q := ImageQuery{Name: name}
	if activeOnly {
		q.Status = ImageActive
	}
	ims, err := c.ListImages(ctx, q)
	if err != nil {
		return nil, err
	}
	// Glance matches names exactly; keep that true whatever a proxy does.
	return slices.DeleteFunc(ims, func(im Image) bool { return im.Name != name }), nil
}

// LatestImageID is latest-build-id: the ID of the newest active image named
// name (anyStatus: in any state), or "" when there is none.
func (c *Cloud) LatestImageID(ctx context.Context, name string, anyStatus bool) (string, error) {
	ims, err := c.ListImagesByName(ctx, name, !anyStatus)
	if err != nil || len(ims) == 0 {
		return "", err
	}
	return ims[0].ID, nil
}

// UpdateImage sets u's properties (added or replaced), its visibility when
// not empty, and clears os_hidden when u.Unhide, in one PATCH.
func (c *Cloud) UpdateImage(ctx context.Context, id string, u ImageUpdate) error {
	cur, err := c.GetImage(ctx, id)
	if err != nil {
		return err
	}
	var ops images.UpdateOpts
	for _, k := range slices.Sorted(maps.Keys(u.Properties)) {
		op := images.AddOp
		if _, ok := cur.Properties[k]; ok {
			op = images.ReplaceOp // Glance refuses add on an existing property
		}
		ops = append(ops, images.UpdateImageProperty{Op: op, Name: k, Value: u.Properties[k]})
	}
	if u.Visibility != "" {
		ops = append(ops, images.UpdateVisibility{Visibility: images.ImageVisibility(u.Visibility)})
	}
	if u.Unhide {
		ops = append(ops, images.ReplaceImageHidden{NewHidden: false})
	}
	if len(ops) == 0 {
		return nil
	}
	err = Retry(ctx, c.log, "update image", func(ctx context.Context) error {
		_, err := images.Update(ctx, c.image, id, ops).Extract()
		return err
	})
	return classify(err, "update image "+id)
}

// DeleteImage deletes image id; an image already gone is not an error.
func (c *Cloud) DeleteImage(ctx context.Context, id string) error {
	err := Retry(ctx, c.log, "delete image", func(ctx context.Context) error {
		return images.Delete(ctx, c.image, id).ExtractErr()
	})
	if err == nil || IsNotFound(err) {
		return nil
	}
	return classify(err, "delete image "+id)
}

// WaitImageActive polls image id until it is active, from small intervals
// capped at 2 s. It fails at once (errs.KindPublish) when the image is
// killed, deleted or gone, and ends with ctx.
func (c *Cloud) WaitImageActive(ctx context.Context, id string) (*Image, error) {
	var last *Image
	err := c.poll(ctx, func(ctx context.Context) (bool, error) {
		im, err := images.Get(ctx, c.image, id).Extract()
		switch {
		case IsNotFound(err):
			return false, errs.New(errs.KindPublish, "image %s disappeared while waiting for it to become active", id)
		case IsTransient(err):
			return false, nil
		case err != nil:
			return false, classify(err, "get image "+id)
		}
		i := toImage(im)
		last = &i
		switch i.Status {
		case ImageActive:
			return true, nil
		case ImageKilled, ImageDeleted, ImagePendingDelete:
			return false, errs.New(errs.KindPublish, "image %s (%s) is %s: Glance failed to store it", i.Name, i.ID, i.Status)
		}
		return false, nil
	})
	if err != nil && ctx.Err() != nil {
		status := "unknown"
		if last != nil {
			status = last.Status
		}
		return last, fmt.Errorf("waiting for image %s to be active (status %s): %w", id, status, err)
	}
	return last, err
}

// seekReaderAt reads a ReadSeeker at offsets (one reader at a time).
type seekReaderAt struct {
	mu sync.Mutex
	rs io.ReadSeeker
}

func (s *seekReaderAt) ReadAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.rs.Seek(off, io.SeekStart); err != nil {
		return 0, err
	}
	return io.ReadFull(s.rs, p)
}
