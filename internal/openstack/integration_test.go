package openstack

import (
	"context"
	"crypto/ed25519"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// Integration tests run against the real OpenStack of .ci (see
// docs/ARCHITECTURE.md) when GRIB_IT=1. Its clouds.yaml is
// /var/lib/grib-openstack/clouds.yaml unless GRIB_IT_CLOUDS names another;
// clouds it-a, it-b and it-c are non-admin projects; network it-net is
// 127.77.0.0/24; servers boot with Nova's fake driver unless their image has
// grib_test_guest=true, and an image with grib_test_fail_spawn=true makes a
// server go ERROR. Every resource a test creates carries its own random
// prefix and is removed in t.Cleanup.

const itNetwork = "it-net"

func itCloudsPath() string {
	if p := os.Getenv("GRIB_IT_CLOUDS"); p != "" {
		return p
	}
	return "/var/lib/grib-openstack/clouds.yaml"
}

// itConnect skips unless GRIB_IT=1, then connects to cloud.
func itConnect(t *testing.T, cloud string) *Cloud {
	t.Helper()
	if os.Getenv("GRIB_IT") != "1" {
		t.Skip("integration test: set GRIB_IT=1 with the .ci OpenStack running")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := Connect(ctx, cloud, WithCloudsPaths(itCloudsPath()), WithLogger(log))
	if err != nil {
		t.Fatalf("connect %s: %v", cloud, err)
	}
	return c
}

// testWriter sends log lines to t.Log, so they show only for failing tests.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// itPrefix is a fresh resource prefix for one test.
func itPrefix(t *testing.T) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "it-os-" + hex.EncodeToString(b) + "-"
}

func itCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// cleanupCtx is for t.Cleanup: the test's own context may be over.
func cleanupCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 2*time.Minute)
}

// itImage creates and uploads an image from a temporary file of size bytes
// and returns it active, with the file's content.
func itImage(t *testing.T, ctx context.Context, c *Cloud, name string, size int, props map[string]string) (*Image, []byte) {
	t.Helper()
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "image.raw")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	im, err := c.CreateImage(ctx, ImageSpec{Name: name, DiskFormat: "raw", ContainerFormat: "bare", Visibility: "private", Properties: props})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		if err := c.DeleteImage(ctx, im.ID); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := c.UploadImage(ctx, im.ID, f); err != nil {
		t.Fatal(err)
	}
	active, err := c.WaitImageActive(ctx, im.ID)
	if err != nil {
		t.Fatal(err)
	}
	return active, data
}

func TestITConnect(t *testing.T) {
	c := itConnect(t, "it-a")
	ctx := itCtx(t)
	if c.ProjectID() == "" {
		t.Error("no project ID from the token")
	}
	cfg, err := LoadCloud("it-a", []string{itCloudsPath()})
	if err != nil {
		t.Fatal(err)
	}
	password := cfg.AuthOptions.Password

	t.Run("wrong password", func(t *testing.T) {
		bad := *cfg
		bad.AuthOptions.Password = "wrong-" + password
		_, err := ConnectConfig(ctx, &bad)
		if errs.KindOf(err) != errs.KindAuth || strings.Contains(err.Error(), password) {
			t.Fatalf("err = %v (kind %v), want auth without the password", err, errs.KindOf(err))
		}
	})
	t.Run("unknown cloud lists clouds", func(t *testing.T) {
		_, err := Connect(ctx, "no-such-cloud", WithCloudsPaths(itCloudsPath()))
		if errs.KindOf(err) != errs.KindNotFound || !strings.Contains(err.Error(), "it-a, ") || !strings.Contains(err.Error(), "it-b") {
			t.Fatalf("err = %v, want not found listing it-a and it-b", err)
		}
		if password != "" && strings.Contains(err.Error(), password) {
			t.Fatal("password in error")
		}
	})
	t.Run("unreachable auth URL", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := "http://" + l.Addr().String() + "/v3"
		l.Close()
		_, err = Connect(ctx, "it-a", WithCloudsPaths(itCloudsPath()), WithAuthURL(closed),
			WithHTTPClient(&http.Client{Timeout: 30 * time.Second}))
		if errs.KindOf(err) != errs.KindUnreachable {
			t.Fatalf("err = %v (kind %v), want unreachable", err, errs.KindOf(err))
		}
	})
}

func TestITImages(t *testing.T) {
	c := itConnect(t, "it-a")
	ctx := itCtx(t)
	prefix := itPrefix(t)
	name := prefix + "img"
	props := map[string]string{"architecture": "x86_64", "os_distro": "ubuntu", "grib_it_run": prefix}

	first, data := itImage(t, ctx, c, name, 3<<20+17, props)
	md5sum := md5.Sum(data)
	sha := sha512.Sum512(data)
	if first.SizeBytes != int64(len(data)) || first.Checksum != hex.EncodeToString(md5sum[:]) {
		t.Errorf("size %d checksum %s; want %d %x", first.SizeBytes, first.Checksum, len(data), md5sum)
	}
	if first.HashAlgo != "sha512" || first.HashValue != hex.EncodeToString(sha[:]) {
		t.Errorf("os_hash %s:%s, want sha512:%x", first.HashAlgo, first.HashValue, sha)
	}
	if first.Properties["os_distro"] != "ubuntu" || first.Owner != c.ProjectID() || first.Visibility != "private" {
		t.Errorf("image %+v: properties, owner or visibility wrong", first)
	}

	t.Run("download streams the same bytes", func(t *testing.T) {
		rc, err := c.DownloadImage(ctx, first.ID)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		h := sha256.New()
		if _, err := io.Copy(h, rc); err != nil {
			t.Fatal(err)
		}
		if want := sha256.Sum256(data); !slices.Equal(h.Sum(nil), want[:]) {
			t.Error("downloaded data differs")
		}
	})

	// Two more of the same name (Glance stores seconds: wait across one so
	// that the order is by time, not only by ID), and one queued.
	time.Sleep(1100 * time.Millisecond)
	second, _ := itImage(t, ctx, c, name, 1024, map[string]string{"grib_it_run": prefix, "grib_it_second": "yes"})
	queued, err := c.CreateImage(ctx, ImageSpec{Name: name, DiskFormat: "raw", ContainerFormat: "bare"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		_ = c.DeleteImage(ctx, queued.ID)
	})

	t.Run("list by name newest first", func(t *testing.T) {
		active, err := c.ListImagesByName(ctx, name, true)
		if err != nil {
			t.Fatal(err)
		}
		if len(active) != 2 || active[0].ID != second.ID || active[1].ID != first.ID {
			t.Fatalf("active list %v, want [%s %s]", ids(active), second.ID, first.ID)
		}
		all, err := c.ListImagesByName(ctx, name, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 3 || !slices.Contains(ids(all), queued.ID) {
			t.Fatalf("all list %v, want 3 with the queued %s", ids(all), queued.ID)
		}
		latest, err := c.LatestImageID(ctx, name, false)
		if err != nil || latest != second.ID {
			t.Errorf("LatestImageID = %q, %v; want %s", latest, err, second.ID)
		}
		anyLatest, err := c.LatestImageID(ctx, name, true)
		if err != nil || anyLatest != all[0].ID {
			t.Errorf("LatestImageID any = %q, %v; want %s", anyLatest, err, all[0].ID)
		}
		none, err := c.LatestImageID(ctx, prefix+"nothing", true)
		if err != nil || none != "" {
			t.Errorf("LatestImageID of nothing = %q, %v", none, err)
		}
	})

	t.Run("property filters", func(t *testing.T) {
		got, err := c.ListImages(ctx, ImageQuery{Properties: map[string]string{"grib_it_run": prefix}})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids(got), []string{second.ID, first.ID}) {
			t.Errorf("filter grib_it_run: %v", ids(got))
		}
		got, err = c.ListImages(ctx, ImageQuery{Properties: map[string]string{"grib_it_run": prefix, "grib_it_second": "yes"}})
		if err != nil || !slices.Equal(ids(got), []string{second.ID}) {
			t.Errorf("filter two properties: %v, %v", ids(got), err)
		}
	})

	t.Run("update properties", func(t *testing.T) {
		if err := c.UpdateImage(ctx, first.ID, ImageUpdate{Properties: map[string]string{"os_distro": "debian", "grib_published": "true"}, Visibility: "shared"}); err != nil {
			t.Fatal(err)
		}
		im, err := c.GetImage(ctx, first.ID)
		if err != nil {
			t.Fatal(err)
		}
		if im.Properties["os_distro"] != "debian" || im.Properties["grib_published"] != "true" || im.Visibility != "shared" {
			t.Errorf("after update: %+v", im)
		}
	})

	// A hidden image is in no listing but one that asks for hidden images,
	// until it is unhidden.
	t.Run("hidden until unhidden", func(t *testing.T) {
		hidden, err := c.CreateImage(ctx, ImageSpec{Name: name + "-hidden", DiskFormat: "raw", ContainerFormat: "bare", Hidden: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := cleanupCtx()
			defer cancel()
			_ = c.DeleteImage(ctx, hidden.ID)
		})
		listed := func(include bool) bool {
			t.Helper()
			ims, err := c.ListImages(ctx, ImageQuery{Name: name + "-hidden", IncludeHidden: include})
			if err != nil {
				t.Fatal(err)
			}
			return slices.Contains(ids(ims), hidden.ID)
		}
		if !hidden.Hidden || listed(false) || !listed(true) {
			t.Fatalf("created hidden=%v; listed without hidden %v, with %v; want true, false, true", hidden.Hidden, listed(false), listed(true))
		}
		if byName, err := c.ListImagesByName(ctx, name+"-hidden", false); err != nil || len(byName) != 0 {
			t.Errorf("ListImagesByName lists the hidden image: %v, %v", ids(byName), err)
		}
		if err := c.UpdateImage(ctx, hidden.ID, ImageUpdate{Unhide: true}); err != nil {
			t.Fatal(err)
		}
		if im, err := c.GetImage(ctx, hidden.ID); err != nil || im.Hidden || !listed(false) {
			t.Errorf("after unhiding: %+v, %v; listed %v", im, err, listed(false))
		}
	})

	t.Run("delete", func(t *testing.T) {
		if err := c.DeleteImage(ctx, second.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetImage(ctx, second.ID); errs.KindOf(err) != errs.KindNotFound {
			t.Errorf("get after delete: %v", err)
		}
		if err := c.DeleteImage(ctx, second.ID); err != nil {
			t.Errorf("second delete: %v", err)
		}
	})
}

func ids(ims []Image) []string {
	out := make([]string, 0, len(ims))
	for _, im := range ims {
		out = append(out, im.ID)
	}
	return out
}

// itKey returns a fresh ed25519 public key in authorized_keys form and its
// Nova fingerprint.
func itKey(t *testing.T) (string, string) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(ssh.MarshalAuthorizedKey(sp)), ssh.FingerprintLegacyMD5(sp)
}

func TestITKeypair(t *testing.T) {
	c := itConnect(t, "it-a")
	ctx := itCtx(t)
	name := itPrefix(t) + "key"
	pub, fp := itKey(t)
	k, err := c.ImportKeypair(ctx, name, pub)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		_ = c.DeleteKeypair(ctx, name)
	})
	got, err := c.GetKeypair(ctx, name)
	if err != nil || got.Fingerprint != fp || k.Fingerprint != fp {
		t.Fatalf("GetKeypair = %+v, %v; want fingerprint %s", got, err, fp)
	}
	if listed, err := c.ListKeypairs(ctx, name); err != nil || len(listed) != 1 || listed[0].Name != name {
		t.Errorf("ListKeypairs(%s) = %v, %v", name, listed, err)
	}
	if _, err := c.ImportKeypair(ctx, name, pub); !IsConflict(err) {
		t.Errorf("second import: %v, want a 409", err)
	}
	if err := c.DeleteKeypair(ctx, name); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetKeypair(ctx, name); errs.KindOf(err) != errs.KindNotFound {
		t.Errorf("get after delete: %v, want not found", err)
	}
	if err := c.DeleteKeypair(ctx, name); err != nil {
		t.Errorf("delete of a missing keypair: %v", err)
	}
}

func TestITSecurityGroupConcurrentEnsure(t *testing.T) {
	a := itConnect(t, "it-a")
	b := itConnect(t, "it-a")
	ctx := itCtx(t)
	for round := range 3 {
		name := itPrefix(t) + "sg"
		t.Cleanup(func() {
			ctx, cancel := cleanupCtx()
			defer cancel()
			gs, _ := a.ListSecurityGroups(ctx, name)
			for _, g := range gs {
				_ = a.DeleteSecurityGroup(ctx, g.ID)
			}
		})
		var wg sync.WaitGroup
		errCh := make(chan error, 2)
		for _, c := range []*Cloud{a, b} {
			wg.Go(func() {
				_, err := c.EnsureSecurityGroup(ctx, name, "integration test")
				errCh <- err
			})
		}
		wg.Wait()
		close(errCh)
		for err := range errCh {
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		gs, err := a.ListSecurityGroups(ctx, name)
		if err != nil || len(gs) != 1 {
			t.Fatalf("round %d: %d groups (%v), want exactly 1", round, len(gs), err)
		}
		// Once more, sequentially: same group, no duplicate rules.
		g, err := b.EnsureSecurityGroup(ctx, name, "integration test")
		if err != nil || g.ID != gs[0].ID {
			t.Fatalf("round %d: re-ensure = %+v, %v; want %s", round, g, err, gs[0].ID)
		}
	}
}

// itBootResources makes what a server needs: an image (with props), the
// smallest fitting flavor, it-net, a keypair and a security group.
func itBootResources(t *testing.T, ctx context.Context, c *Cloud, prefix string, imageProps map[string]string) ServerSpec {
	t.Helper()
	im, _ := itImage(t, ctx, c, prefix+"base", 1<<20, imageProps)
	fl, err := c.SelectFlavor(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	nw, err := c.SelectNetwork(ctx, itNetwork)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := itKey(t)
	if _, err := c.ImportKeypair(ctx, prefix+"key", pub); err != nil {
		t.Fatal(err)
	}
	sg, err := c.EnsureSecurityGroup(ctx, prefix+"sg", "integration test")
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last-in first-out: these run after the server's.
	t.Cleanup(func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		if err := c.DeleteKeypair(ctx, prefix+"key"); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if err := c.DeleteSecurityGroup(ctx, sg.ID); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return ServerSpec{Name: prefix + "builder", ImageID: im.ID, FlavorID: fl.ID, NetworkID: nw.ID,
		KeyName: prefix + "key", SecurityGroup: sg.Name, UserData: []byte("#cloud-config\n{}\n"),
		ConfigDrive: true, Metadata: map[string]string{"grib_it": prefix}, Tags: []string{"grib-it"}}
}

func itCreateServer(t *testing.T, ctx context.Context, c *Cloud, spec ServerSpec) *Server {
	t.Helper()
	s, err := c.CreateServer(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		if err := c.DeleteServer(ctx, s.ID); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return s
}

func TestITServerLifecycle(t *testing.T) {
	c := itConnect(t, "it-a")
	ctx := itCtx(t)
	prefix := itPrefix(t)
	spec := itBootResources(t, ctx, c, prefix, nil)
	s := itCreateServer(t, ctx, c, spec)

	active, err := c.WaitServer(ctx, s.ID, StatusActive)
	if err != nil {
		t.Fatal(err)
	}
	if active.Metadata["grib_it"] != prefix {
		t.Errorf("metadata %v", active.Metadata)
	}
	addr, err := FixedAddress(active, itNetwork)
	if err != nil || !strings.HasPrefix(addr.String(), "127.77.0.") {
		t.Errorf("fixed address %v, %v; want one in 127.77.0.0/24", addr, err)
	}
	listed, err := c.ListServers(ctx, prefix)
	if err != nil || len(listed) != 1 || listed[0].ID != s.ID {
		t.Errorf("ListServers(%s) = %v, %v", prefix, listed, err)
	}
	if others, err := c.ListServers(ctx, prefix+"x"); err != nil || len(others) != 0 {
		t.Errorf("ListServers of another prefix = %v, %v", others, err)
	}
	console, err := c.ConsoleOutput(ctx, s.ID, 2)
	if err != nil || strings.Count(strings.TrimSuffix(console, "\n"), "\n") > 1 {
		t.Errorf("console (2 lines) = %q, %v", console, err)
	}

	if err := c.StopServer(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.StopServer(ctx, s.ID); err != nil {
		t.Errorf("stopping a stopped server: %v", err)
	}
	snapID, err := c.CreateSnapshot(ctx, s.ID, prefix+"snap", map[string]string{"grib_published": "true", "os_distro": "ubuntu"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		_ = c.DeleteImage(ctx, snapID)
	})
	snap, err := c.WaitImageActive(ctx, snapID)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Name != prefix+"snap" || snap.Properties["grib_published"] != "true" || snap.SizeBytes == 0 {
		t.Errorf("snapshot %+v", snap)
	}

	if err := c.DeleteServer(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetServer(ctx, s.ID); errs.KindOf(err) != errs.KindNotFound {
		t.Errorf("get after delete: %v, want not found", err)
	}
}

func TestITServerErrorFault(t *testing.T) {
	c := itConnect(t, "it-a")
	ctx := itCtx(t)
	prefix := itPrefix(t)
	spec := itBootResources(t, ctx, c, prefix, map[string]string{"grib_test_fail_spawn": "true"})
	s := itCreateServer(t, ctx, c, spec)
	got, err := c.WaitServer(ctx, s.ID, StatusActive)
	if errs.KindOf(err) != errs.KindBuild || got == nil || got.Status != StatusError {
		t.Fatalf("WaitServer = %+v, %v; want KindBuild for an ERROR server", got, err)
	}
	if got.Fault == "" || !strings.Contains(err.Error(), got.Fault) {
		t.Errorf("error %q does not carry Nova's fault %q", err, got.Fault)
	}
}

func TestITSelection(t *testing.T) {
	c := itConnect(t, "it-a")
	ctx := itCtx(t)
	fl, err := c.SelectFlavor(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if !fl.meetsMinimum() {
		t.Errorf("picked %+v, below the minimum", fl)
	}
	again, err := c.SelectFlavor(ctx, fl.Name)
	if err != nil || again.ID != fl.ID {
		t.Errorf("by name: %+v, %v", again, err)
	}
	if _, err := c.SelectFlavor(ctx, "no-such-flavor"); errs.KindOf(err) != errs.KindNotFound {
		t.Errorf("missing flavor: %v", err)
	}
	n1, err := c.SelectNetwork(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	n2, err := c.SelectNetwork(ctx, "")
	if err != nil || n1.ID != n2.ID {
		t.Errorf("network choice not stable: %v then %v (%v)", n1, n2, err)
	}
	if n1.External || len(n1.Subnets) == 0 {
		t.Errorf("picked %+v: external or without subnet", n1)
	}
	byName, err := c.SelectNetwork(ctx, itNetwork)
	if err != nil || byName.Name != itNetwork {
		t.Errorf("it-net: %+v, %v", byName, err)
	}
	if _, err := c.SelectNetwork(ctx, "no-such-network"); errs.KindOf(err) != errs.KindNotFound {
		t.Errorf("missing network: %v", err)
	}
}
