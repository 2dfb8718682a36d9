package builder

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
)

// fakeCloud is an in-memory Cloud for unit tests: images with data and
// checksums, servers that go ACTIVE (or ERROR) at once, keypairs and groups.
type fakeCloud struct {
	name, project string

	mu       sync.Mutex
	nextID   int
	images   map[string]*openstack.Image
	data     map[string][]byte
	servers  map[string]*openstack.Server
	keypairs map[string]string
	groups   map[string]openstack.SecurityGroup
	calls    []string
	created  map[string]map[string]string // image ID -> the properties CreateImage got
	userData map[string][]byte            // server ID -> the user-data it booted with

	serverFault  string           // servers go ERROR with this fault
	corruptCopy  bool             // uploads store altered data
	snapshotData []byte           // what a snapshot holds
	clock        func() time.Time // creation times
	fail         map[string]error // call name -> error

	downloads int // DownloadImage calls so far
	// downloadBody, if set, makes the body of the nth DownloadImage call
	// (from 1) of an image holding data.
	downloadBody func(ctx context.Context, n int, data []byte) io.Reader
	// onUploadRead, if set, is called after each read of an upload's data.
	onUploadRead func()
}

func newFakeCloud(name string) *fakeCloud {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	n := 0
	return &fakeCloud{
		name: name, project: "proj-" + name,
		images: map[string]*openstack.Image{}, data: map[string][]byte{},
		servers: map[string]*openstack.Server{}, keypairs: map[string]string{}, groups: map[string]openstack.SecurityGroup{},
		snapshotData: []byte("snapshot-bytes"),
		clock:        func() time.Time { n++; return base.Add(time.Duration(n) * time.Minute) },
		fail:         map[string]error{},
	}
}

func (f *fakeCloud) call(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, name)
	return f.fail[name]
}

func (f *fakeCloud) id(kind string) string {
	f.nextID++
	return fmt.Sprintf("%s-%s-%d", f.name, kind, f.nextID)
}

func (f *fakeCloud) Name() string      { return f.name }
func (f *fakeCloud) ProjectID() string { return f.project }

// --- servers

func (f *fakeCloud) CreateServer(_ context.Context, spec openstack.ServerSpec) (*openstack.Server, error) {
	if err := f.call("CreateServer"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &openstack.Server{ID: f.id("server"), Name: spec.Name, Status: "BUILD", Created: f.clock(), Metadata: maps.Clone(spec.Metadata)}
	f.servers[s.ID] = s
	if f.userData == nil {
		f.userData = map[string][]byte{}
	}
	f.userData[s.ID] = bytes.Clone(spec.UserData)
	c := *s
	return &c, nil
}

func (f *fakeCloud) GetServer(_ context.Context, id string) (*openstack.Server, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.servers[id]
	if !ok {
		return nil, errs.New(errs.KindNotFound, "server %s not found", id)
	}
	c := *s
	return &c, nil
}

func (f *fakeCloud) ListServers(_ context.Context, prefix string) ([]openstack.Server, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []openstack.Server
	for _, s := range f.servers {
		if strings.HasPrefix(s.Name, prefix) {
			out = append(out, *s)
		}
	}
	return out, nil
}

func (f *fakeCloud) DeleteServer(_ context.Context, id string) error {
	if err := f.call("DeleteServer"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.servers, id)
	return nil
}

func (f *fakeCloud) StopServer(_ context.Context, id string) error {
	if err := f.call("StopServer"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.servers[id].Status = openstack.StatusShutoff
	return nil
}

func (f *fakeCloud) WaitServer(_ context.Context, id, target string) (*openstack.Server, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.servers[id]
	if !ok {
		return nil, errs.New(errs.KindNotFound, "server %s not found", id)
	}
	if f.serverFault != "" {
		s.Status, s.Fault = openstack.StatusError, f.serverFault
		return nil, openstack.ServerError(s)
	}
	s.Status = target
	c := *s
	return &c, nil
}

func (f *fakeCloud) ConsoleOutput(context.Context, string, int) (string, error) {
	return "console", nil
}

func (f *fakeCloud) CreateSnapshot(_ context.Context, serverID, name string, md map[string]string) (string, error) {
	if err := f.call("CreateSnapshot"); err != nil {
		return "", err
	}
	im := f.store(name, "qcow2", md, f.snapshotData)
	return im.ID, nil
}

// --- images

// store adds an active image holding data.
func (f *fakeCloud) store(name, format string, props map[string]string, data []byte) *openstack.Image {
	f.mu.Lock()
	defer f.mu.Unlock()
	im := &openstack.Image{ID: f.id("image"), Name: name, Status: openstack.ImageQueued, DiskFormat: format, ContainerFormat: "bare",
		Owner: f.project, Properties: maps.Clone(props), CreatedAt: f.clock(), Visibility: "private"}
	if im.Properties == nil {
		im.Properties = map[string]string{}
	}
	f.images[im.ID] = im
	if data != nil {
		f.setData(im, data)
	}
	return im
}

func (f *fakeCloud) setData(im *openstack.Image, data []byte) {
	m, s := md5.Sum(data), sha512.Sum512(data)
	f.data[im.ID] = bytes.Clone(data)
	im.Status, im.SizeBytes = openstack.ImageActive, int64(len(data))
	im.Checksum, im.HashAlgo, im.HashValue = hex.EncodeToString(m[:]), "sha512", hex.EncodeToString(s[:])
}

func (f *fakeCloud) CreateImage(_ context.Context, spec openstack.ImageSpec) (*openstack.Image, error) {
	if err := f.call("CreateImage"); err != nil {
		return nil, err
	}
	im := f.store(spec.Name, spec.DiskFormat, spec.Properties, nil)
	f.mu.Lock()
	im.Hidden = spec.Hidden
	if f.created == nil {
		f.created = map[string]map[string]string{}
	}
	f.created[im.ID] = maps.Clone(spec.Properties)
	c := *im
	f.mu.Unlock()
	return &c, nil
}

func (f *fakeCloud) UploadImage(_ context.Context, id string, r io.ReadSeeker) error {
	if err := f.call("UploadImage"); err != nil {
		return err
	}
	if ra, ok := r.(io.ReaderAt); ok {
		r = io.NewSectionReader(ra, 0, math.MaxInt64) // read at offsets, as openstack.Cloud does
	}
	data, err := io.ReadAll(uploadReader{r, f.onUploadRead})
	if err != nil {
		return err
	}
	if f.corruptCopy {
		data = append(data, 'x')
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setData(f.images[id], data)
	return nil
}

// uploadReader calls onRead (if set) after each read.
type uploadReader struct {
	r      io.Reader
	onRead func()
}

func (u uploadReader) Read(p []byte) (int, error) {
	n, err := u.r.Read(p)
	if u.onRead != nil {
		u.onRead()
	}
	return n, err
}

func (f *fakeCloud) DownloadImage(ctx context.Context, id string) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.downloads++
	if f.downloadBody != nil {
		return io.NopCloser(f.downloadBody(ctx, f.downloads, bytes.Clone(f.data[id]))), nil
	}
	return io.NopCloser(bytes.NewReader(f.data[id])), nil
}

func (f *fakeCloud) GetImage(_ context.Context, id string) (*openstack.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	im, ok := f.images[id]
	if !ok {
		return nil, errs.New(errs.KindNotFound, "image %s not found", id)
	}
	c := *im
	c.Properties = maps.Clone(im.Properties)
	return &c, nil
}

func (f *fakeCloud) ListImagesByName(ctx context.Context, name string, activeOnly bool) ([]openstack.Image, error) {
	q := openstack.ImageQuery{Name: name}
	if activeOnly {
		q.Status = openstack.ImageActive
	}
	return f.ListImages(ctx, q)
}

func (f *fakeCloud) ListImages(_ context.Context, q openstack.ImageQuery) ([]openstack.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []openstack.Image
	for _, im := range f.images {
		if (q.Name != "" && im.Name != q.Name) || (q.Status != "" && im.Status != q.Status) || (q.Owner != "" && im.Owner != q.Owner) ||
			(im.Hidden && !q.IncludeHidden) {
			continue
		}
		c := *im
		c.Properties = maps.Clone(im.Properties)
		out = append(out, c)
	}
	slices.SortFunc(out, newestFirst)
	return out, nil
}

func (f *fakeCloud) UpdateImage(_ context.Context, id string, u openstack.ImageUpdate) error {
	if err := f.call("UpdateImage"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	im := f.images[id]
	maps.Copy(im.Properties, u.Properties)
	if u.Visibility != "" {
		im.Visibility = u.Visibility
	}
	if u.Unhide {
		im.Hidden = false
	}
	return nil
}

func (f *fakeCloud) DeleteImage(_ context.Context, id string) error {
	if err := f.call("DeleteImage"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.images, id)
	delete(f.data, id)
	return nil
}

func (f *fakeCloud) WaitImageActive(ctx context.Context, id string) (*openstack.Image, error) {
	return f.GetImage(ctx, id)
}

func (f *fakeCloud) LatestImageID(ctx context.Context, name string, anyStatus bool) (string, error) {
	ims, err := f.ListImagesByName(ctx, name, !anyStatus)
	if err != nil || len(ims) == 0 {
		return "", err
	}
	return ims[0].ID, nil
}

// --- keypairs, groups, selection

func (f *fakeCloud) GetKeypair(_ context.Context, name string) (*openstack.Keypair, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	pub, ok := f.keypairs[name]
	if !ok {
		return nil, errs.New(errs.KindNotFound, "keypair %s not found", name)
	}
	return &openstack.Keypair{Name: name, PublicKey: pub}, nil
}

func (f *fakeCloud) ImportKeypair(_ context.Context, name, pub string) (*openstack.Keypair, error) {
	if err := f.call("ImportKeypair"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.keypairs[name]; ok {
		return nil, fmt.Errorf("keypair %s exists", name)
	}
	f.keypairs[name] = pub
	return &openstack.Keypair{Name: name, PublicKey: pub}, nil
}

func (f *fakeCloud) DeleteKeypair(_ context.Context, name string) error {
	if err := f.call("DeleteKeypair"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.keypairs, name)
	return nil
}

func (f *fakeCloud) EnsureSecurityGroup(_ context.Context, name, _ string) (*openstack.SecurityGroup, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	g, ok := f.groups[name]
	if !ok {
		g = openstack.SecurityGroup{ID: f.id("sg"), Name: name, CreatedAt: f.clock()}
		f.groups[name] = g
	}
	return &g, nil
}

func (f *fakeCloud) ListSecurityGroups(_ context.Context, name string) ([]openstack.SecurityGroup, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if g, ok := f.groups[name]; ok {
		return []openstack.SecurityGroup{g}, nil
	}
	return nil, nil
}

func (f *fakeCloud) DeleteSecurityGroup(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for n, g := range f.groups {
		if g.ID == id {
			delete(f.groups, n)
		}
	}
	return nil
}

func (f *fakeCloud) SelectFlavor(context.Context, string) (*openstack.Flavor, error) {
	return &openstack.Flavor{ID: "f1", Name: "m1", VCPUs: 2, RAMMiB: 1024, DiskGiB: 20}, nil
}

func (f *fakeCloud) SelectNetwork(context.Context, string) (*openstack.Network, error) {
	return &openstack.Network{ID: "n1", Name: "net"}, nil
}

// fakeClouds is a Connector over named fakes.
func fakeClouds(clouds ...*fakeCloud) Connector {
	return func(_ context.Context, name string, _ *slog.Logger) (Cloud, error) {
		for _, c := range clouds {
			if c.name == name {
				return c, nil
			}
		}
		return nil, errs.New(errs.KindNotFound, "cloud %q is not in clouds.yaml", name)
	}
}
