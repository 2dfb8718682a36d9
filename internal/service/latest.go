package service

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
	"github.com/runner-image-builder/github-runner-image-builder/internal/service/install"
)

// Catalog lists the images of a cloud; the command line connects it to
// internal/openstack, tests to a fake.
type Catalog interface {
	// ListImagesByName lists the images named exactly name in cloud, newest
	// first; activeOnly keeps only active ones.
	ListImagesByName(ctx context.Context, cloud, name string, activeOnly bool) ([]openstack.Image, error)
}

// RunnerVersionProperty is the image property on which builds record the
// runner version they installed (internal/builder sets it).
const RunnerVersionProperty = "grib_runner_version"

// ManifestSHA256Property is the image property holding the SHA-256 of the
// image's manifest (internal/builder sets it).
const ManifestSHA256Property = "grib_manifest_sha256"

// LatestImage is the newest active image of one cell in one cloud.
type LatestImage struct {
	Cell
	Cloud          string    `json:"cloud"`
	ID             string    `json:"id"`
	Created        time.Time `json:"created_at"`
	RunnerVersion  string    `json:"runner_version,omitempty"`
	ManifestSHA256 string    `json:"manifest_sha256,omitempty"`
}

// Latest finds the newest active image of every cell in every publish
// cloud, in cell order then cloud order; a cell without an image in a cloud
// is left out. The look-ups run concurrently (at most 8 at once).
func (s *Service) Latest(ctx context.Context) ([]LatestImage, error) {
	type key struct{ cell, cloud int }
	cells := s.Config.Cells()
	clouds := make([][]string, len(cells)) // each cell's publish clouds
	for i, cell := range cells {
		clouds[i] = s.Config.PublishCloudsOf(cell)
	}
	found := make(map[key]LatestImage)
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		firstErr error
	)
	sem := make(chan struct{}, 8)
	for i, cell := range cells {
		for j, cloud := range clouds[i] {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				ims, err := s.Catalog.ListImagesByName(ctx, cloud, cell.ImageName, true)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					if firstErr == nil {
						firstErr = fmt.Errorf("listing %s in cloud %s: %w", cell.ImageName, cloud, err)
					}
					return
				}
				if im, ok := newestActive(ims, cell.ImageName); ok {
					found[key{i, j}] = LatestImage{Cell: cell, Cloud: cloud, ID: im.ID, Created: im.CreatedAt,
						RunnerVersion: im.Properties[RunnerVersionProperty], ManifestSHA256: im.Properties[ManifestSHA256Property]}
				}
			})
		}
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	var out []LatestImage
	for i := range cells {
		for j := range clouds[i] {
			if im, ok := found[key{i, j}]; ok {
				out = append(out, im)
			}
		}
	}
	return out, nil
}

// newestActive returns the newest active image named name (whatever order
// the catalog answered in).
func newestActive(ims []openstack.Image, name string) (openstack.Image, bool) {
	var best openstack.Image
	ok := false
	for _, im := range ims {
		if im.Name != name || im.Status != openstack.ImageActive {
			continue
		}
		if !ok || im.CreatedAt.After(best.CreatedAt) || (im.CreatedAt.Equal(best.CreatedAt) && im.ID < best.ID) {
			best, ok = im, true
		}
	}
	return best, ok
}

// RelationImage is one image as the charm's image relation carries it.
type RelationImage struct {
	ID   string `json:"id"`
	Tags string `json:"tags"` // "<arch>,<base>"
	// The rest is ours; the charm's consumers read only id and tags.
	Name          string    `json:"name"`
	Base          string    `json:"base"`
	Arch          string    `json:"arch"`
	Created       time.Time `json:"created_at"`
	RunnerVersion string    `json:"runner_version,omitempty"`
	// ManifestSHA256 is the SHA-256 of the image's manifest
	// (/etc/runner-image/manifest.json), "" for an image built without one.
	ManifestSHA256 string `json:"manifest_sha256,omitempty"`
}

// RelationCloud is what the charm writes in one cloud's relation data: id
// and tags of the first image (first configured base), and the list of all.
type RelationCloud struct {
	ID     string          `json:"id"`
	Tags   string          `json:"tags"`
	Images []RelationImage `json:"images"`
}

// LatestDocument is `latest --format json`, the latest file and
// GET /v1/images/latest: per cloud, the charm's image relation data.
type LatestDocument struct {
	Clouds map[string]RelationCloud `json:"clouds"`
}

// NewLatestDocument groups images (in Latest's order) by cloud.
func NewLatestDocument(images []LatestImage) LatestDocument {
	doc := LatestDocument{Clouds: map[string]RelationCloud{}}
	for _, im := range images {
		rc := doc.Clouds[im.Cloud]
		ri := RelationImage{ID: im.ID, Tags: im.Tags(), Name: im.ImageName, Base: string(im.Base), Arch: string(im.Arch),
			Created: im.Created.UTC(), RunnerVersion: im.RunnerVersion, ManifestSHA256: im.ManifestSHA256}
		if len(rc.Images) == 0 {
			rc.ID, rc.Tags = ri.ID, ri.Tags
		}
		rc.Images = append(rc.Images, ri)
		doc.Clouds[im.Cloud] = rc
	}
	return doc
}

// MarshalLatest encodes doc as indented JSON with a final newline.
func MarshalLatest(doc LatestDocument) ([]byte, error) {
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// WriteLatestText prints one line per image: cloud, base, arch, name, ID,
// creation time.
func WriteLatestText(w io.Writer, images []LatestImage) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "CLOUD\tBASE\tARCH\tNAME\tID\tCREATED")
	for _, im := range images {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", im.Cloud, im.Base, im.Arch, im.ImageName, im.ID, im.Created.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

// WriteLatestFile writes doc to path atomically (0644: it holds no secret
// and consumers running as other users read it).
func WriteLatestFile(path string, doc LatestDocument) error {
	data, err := MarshalLatest(doc)
	if err != nil {
		return err
	}
	return install.WriteAtomic(path, data, 0o644)
}

// cloudCatalog lists images through openstack.Connector, keeping one
// connection per cloud.
type cloudCatalog struct {
	connect openstack.Connector

	mu     sync.Mutex
	clouds map[string]*openstack.Cloud
}

// NewCloudCatalog is the real Catalog: clouds are opened from the
// clouds.yaml at paths, reached through proxy (zero: the environment's).
func NewCloudCatalog(paths []string, proxy config.HostProxy, log *slog.Logger) Catalog {
	return &cloudCatalog{connect: openstack.Connector{Paths: paths, Log: log, Proxy: proxy.ProxyFunc()}, clouds: map[string]*openstack.Cloud{}}
}

func (c *cloudCatalog) ListImagesByName(ctx context.Context, cloud, name string, activeOnly bool) ([]openstack.Image, error) {
	conn, err := c.conn(ctx, cloud)
	if err != nil {
		return nil, err
	}
	return conn.ListImagesByName(ctx, name, activeOnly)
}

// conn is the catalog's connection to cloud, opened on first use.
func (c *cloudCatalog) conn(ctx context.Context, cloud string) (*openstack.Cloud, error) {
	c.mu.Lock()
	conn := c.clouds[cloud]
	c.mu.Unlock()
	if conn == nil {
		var err error
		if conn, err = c.connect.Connect(ctx, cloud, nil); err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.clouds[cloud] = conn
		c.mu.Unlock()
	}
	return conn, nil
}

// InstanceHeadroom and ImageHeadroom make the cloud catalog a Quota.
var _ Quota = (*cloudCatalog)(nil)

func (c *cloudCatalog) InstanceHeadroom(ctx context.Context, cloud string) (int, bool, error) {
	conn, err := c.conn(ctx, cloud)
	if err != nil {
		return 0, false, err
	}
	return conn.InstanceHeadroom(ctx)
}

func (c *cloudCatalog) ImageHeadroom(ctx context.Context, cloud string) (int, bool, error) {
	conn, err := c.conn(ctx, cloud)
	if err != nil {
		return 0, false, err
	}
	return conn.ImageHeadroom(ctx)
}
