package faultproxy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/runner-image-builder/github-runner-image-builder/internal/faultproxy"
	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// TestIntegrationFaultsReachGophercloud runs gophercloud against the real
// test OpenStack through the proxy (GRIB_IT=1; see internal/testenv) and
// shows that a 503, a reset and a forced 401 each arrive at the client as
// they would from a real failing cloud, and that a real Glance upload and
// download stream through it (a 401 mid-upload, a cut download).
func TestIntegrationFaultsReachGophercloud(t *testing.T) {
	testenv.Require(t)
	cloudsFile := testenv.CloudsFile()
	ao, eo, _, err := clouds.Parse(clouds.WithCloudName(testenv.BuildCloud), clouds.WithLocations(cloudsFile))
	if err != nil {
		t.Fatalf("cloud %s in %s: %v", testenv.BuildCloud, cloudsFile, err)
	}
	p, err := faultproxy.New(ao.IdentityEndpoint, faultproxy.WithLogger(slog.New(slog.NewTextHandler(t.Output(), nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	ao.IdentityEndpoint = p.AuthURL()
	ao.AllowReauth = true

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	provider, err := openstack.AuthenticatedClient(ctx, ao)
	if err != nil {
		t.Fatalf("authenticating through the proxy: %v", err)
	}
	compute, err := openstack.NewComputeV2(provider, eo)
	if err != nil {
		t.Fatal(err)
	}
	image, err := openstack.NewImageV2(provider, eo)
	if err != nil {
		t.Fatal(err)
	}
	for name, endpoint := range map[string]string{"compute": compute.Endpoint, "image": image.Endpoint} {
		if strings.Contains(endpoint, ":8774") || strings.Contains(endpoint, ":9292") || !strings.HasPrefix(endpoint, "http://127.0.0.1:") {
			t.Fatalf("%s endpoint %q is not the proxy's: the catalog was not rewritten", name, endpoint)
		}
	}
	add := func(r faultproxy.Rule) *faultproxy.Handle {
		t.Helper()
		h, err := p.Add(r)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.Remove)
		return h
	}
	listImages := func() error {
		_, err := images.List(image, images.ListOpts{Limit: 5}).AllPages(ctx)
		return err
	}
	listServers := func() error {
		_, err := servers.List(compute, nil).AllPages(ctx)
		return err
	}
	countTokens := func() int {
		if err := p.Idle(ctx); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range p.Requests() {
			if r.Method == "POST" && strings.HasSuffix(r.Path, "/auth/tokens") && r.Status == 201 {
				n++
			}
		}
		return n
	}

	t.Run("503 on an image list", func(t *testing.T) {
		h := add(faultproxy.Rule{Method: "GET", Service: faultproxy.Image, Path: `^/v2/images$`,
			When: faultproxy.Nth(1), Fault: faultproxy.Status(503)})
		err := listImages()
		if !gophercloud.ResponseCodeIs(err, 503) {
			t.Errorf("image list: %v, want a 503 error", err)
		}
		if err := listImages(); err != nil || h.Fired() != 1 {
			t.Errorf("second image list: %v (rule fired %d times, want 1)", err, h.Fired())
		}
	})

	t.Run("reset on a server list", func(t *testing.T) {
		// Every, not Nth(1): Go's Transport retries a GET once after a reset
		// on a reused connection.
		h := add(faultproxy.Rule{Method: "GET", Service: faultproxy.Compute, Path: `^/v2\.1/servers(/detail)?$`,
			Fault: faultproxy.Reset()})
		err := listServers()
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("server list: %v, want a connection reset", err)
		}
		if h.Fired() < 1 {
			t.Errorf("rule fired %d times", h.Fired())
		}
		h.Remove()
		if err := listServers(); err != nil {
			t.Errorf("server list without the rule: %v", err)
		}
	})

	t.Run("401 makes gophercloud reauthenticate", func(t *testing.T) {
		before := countTokens()
		h := add(faultproxy.Rule{Method: "GET", Service: faultproxy.Compute, Path: `^/v2\.1/servers(/detail)?$`,
			When: faultproxy.Nth(1), Fault: faultproxy.Unauthorized()})
		if err := listServers(); err != nil {
			t.Errorf("server list after a forced 401: %v, want success after reauthentication", err)
		}
		if h.Fired() != 1 {
			t.Errorf("rule fired %d times, want 1", h.Fired())
		}
		if after := countTokens(); after != before+1 {
			t.Errorf("token requests through the proxy: %d before, %d after; want one more", before, after)
		}
	})

	t.Run("401 mid-upload, then a cut download", func(t *testing.T) {
		prefix := testenv.Prefix(t)
		img, err := images.Create(ctx, image, images.CreateOpts{
			Name: prefix + "-faultproxy", DiskFormat: "raw", ContainerFormat: "bare",
		}).Extract()
		if err != nil {
			t.Fatalf("creating an image: %v", err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := images.Delete(ctx, image, img.ID).ExtractErr(); err != nil {
				t.Errorf("deleting image %s: %v", img.ID, err)
			}
		})
		data := make([]byte, 8<<20)
		if _, err := rand.Read(data); err != nil {
			t.Fatal(err)
		}
		file := `^/v2/images/` + regexp.QuoteMeta(img.ID) + `/file$`

		before := countTokens()
		h := add(faultproxy.Rule{Method: "PUT", Service: faultproxy.Image, Path: file,
			When: faultproxy.Nth(1), Fault: faultproxy.StatusAfter(401, 1<<20)})
		// gophercloud rewinds an io.Seeker body to retry after the 401; see
		// rewindable for why a plain bytes.Reader is not safe here.
		if err := imagedata.Upload(ctx, image, img.ID, newRewindable(data)).ExtractErr(); err != nil {
			t.Fatalf("upload after a 401 mid-upload: %v, want success after reauthentication", err)
		}
		if after := countTokens(); h.Fired() != 1 || after != before+1 {
			t.Errorf("rule fired %d times, tokens %d then %d; want 1 and one more token", h.Fired(), before, after)
		}

		add(faultproxy.Rule{Method: "GET", Service: faultproxy.Image, Path: file,
			When: faultproxy.Nth(1), Fault: faultproxy.CutResponse(1 << 20)})
		download := func() ([]byte, error) {
			r, err := imagedata.Download(ctx, image, img.ID).Extract()
			if err != nil {
				return nil, err
			}
			defer r.Close()
			return io.ReadAll(r)
		}
		got, err := download()
		if err == nil || len(got) != 1<<20 {
			t.Errorf("cut download: %d bytes, err %v; want exactly 1 MiB and an error", len(got), err)
		}
		got, err = download()
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("second download: %d bytes, err %v; want the 8 MiB uploaded", len(got), err)
		}
	})

	if err := p.Idle(ctx); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range p.Requests() {
		seen[r.Service] = true
	}
	for _, s := range []string{faultproxy.Identity, faultproxy.Compute, faultproxy.Image} {
		if !seen[s] {
			t.Errorf("no %s request crossed the proxy: %v", s, seen)
		}
	}
}

// rewindable is an upload body that gophercloud can safely rewind to retry.
// When a server answers before the whole body is sent (a 401 mid-upload),
// net/http's Transport returns the response while its writer goroutine may
// still be reading the body, and closes the body only when that goroutine is
// done. gophercloud then Seeks the same body to retry at once: with a plain
// bytes.Reader that is a data race (seen with -race), and the old writer can
// steal bytes from the retry. rewindable's Seek waits for the Close of the
// attempt before it, as net/http's documentation asks of a reused body.
type rewindable struct {
	mu     sync.Mutex
	r      *bytes.Reader
	closed chan struct{} // closed when the current attempt's body is closed
	once   *sync.Once
}

func newRewindable(b []byte) *rewindable {
	return &rewindable{r: bytes.NewReader(b), closed: make(chan struct{}), once: new(sync.Once)}
}

func (b *rewindable) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.r.Read(p)
}

func (b *rewindable) Close() error {
	b.mu.Lock()
	closed, once := b.closed, b.once
	b.mu.Unlock()
	once.Do(func() { close(closed) })
	return nil
}

func (b *rewindable) Seek(offset int64, whence int) (int64, error) {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	select { // the previous attempt's writer must be done with the body
	case <-closed:
	case <-time.After(time.Minute):
		return 0, errors.New("rewindable: the previous request never closed its body")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed, b.once = make(chan struct{}), new(sync.Once)
	return b.r.Seek(offset, whence)
}
