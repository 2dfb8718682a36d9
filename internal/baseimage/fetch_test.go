package baseimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

const (
	testImageName = "noble-server-cloudimg-amd64.img"
	testDir       = "/noble/current/"
)

var testSpec = Spec{Base: config.BaseNoble, Arch: config.ArchX64}

func newKey(t *testing.T, name string) *openpgp.Entity {
	t.Helper()
	e, err := openpgp.NewEntity(name, "test only", name+"@example.invalid",
		&packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func sign(t *testing.T, key *openpgp.Entity, data []byte) []byte {
	t.Helper()
	var sig bytes.Buffer
	if err := openpgp.DetachSign(&sig, key, bytes.NewReader(data), nil); err != nil {
		t.Fatal(err)
	}
	return sig.Bytes()
}

func hexSHA(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// mirror is a loopback stand-in for cloud-images.ubuntu.com: it serves
// files by path, counts requests per path, and lets a test override the
// handling of one path.
type mirror struct {
	srv      *httptest.Server
	mu       sync.Mutex
	files    map[string][]byte
	hits     map[string]int
	override map[string]http.HandlerFunc
}

func newMirror(t *testing.T, files map[string][]byte) *mirror {
	m := &mirror{files: files, hits: map[string]int{}, override: map[string]http.HandlerFunc{}}
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		m.hits[r.URL.Path]++
		body, ok := m.files[r.URL.Path]
		h := m.override[r.URL.Path]
		m.mu.Unlock()
		switch {
		case h != nil:
			h(w, r)
		case !ok:
			http.NotFound(w, r)
		default:
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
		}
	}))
	t.Cleanup(m.srv.Close)
	return m
}

func (m *mirror) count(path string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hits[path]
}

func (m *mirror) set(path string, h http.HandlerFunc) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.override[path] = h
}

// fixture is a mirror publishing one signed image, and a Fetcher that
// trusts the signing key and caches in a temporary directory.
type fixture struct {
	image   []byte
	sums    []byte
	key     *openpgp.Entity
	mirror  *mirror
	fetcher *Fetcher
	logs    *bytes.Buffer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	fx := &fixture{image: bytes.Repeat([]byte("ubuntu cloud image "), 5000), key: newKey(t, "signer"), logs: &bytes.Buffer{}}
	fx.sums = fmt.Appendf(nil, "%s *%s\n%s *noble-server-cloudimg-arm64.img\n", hexSHA(fx.image), testImageName, strings.Repeat("ab", 32))
	fx.mirror = newMirror(t, map[string][]byte{
		testDir + testImageName:    fx.image,
		testDir + "SHA256SUMS":     fx.sums,
		testDir + "SHA256SUMS.gpg": sign(t, fx.key, fx.sums),
	})
	fx.fetcher = &Fetcher{
		Mirror:     fx.mirror.srv.URL + "/",
		CacheDir:   t.TempDir(),
		HTTP:       fx.mirror.srv.Client(),
		Keyring:    openpgp.EntityList{fx.key},
		Log:        slog.New(slog.NewTextHandler(fx.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Attempts:   3,
		RetryDelay: time.Millisecond,
	}
	return fx
}

// cacheFiles lists every file under the cache directory.
func (fx *fixture) cacheFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(fx.fetcher.CacheDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestFetchGood(t *testing.T) {
	fx := newFixture(t)
	img, err := fx.fetcher.Fetch(context.Background(), testSpec)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(img.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, fx.image) {
		t.Fatal("cached image differs from the served one")
	}
	want := Image{
		Path:     filepath.Join(fx.fetcher.CacheDir, "noble", "current", hexSHA(fx.image)+"-"+testImageName),
		SHA256:   hexSHA(fx.image),
		Size:     int64(len(fx.image)),
		Source:   fx.mirror.srv.URL + testDir + testImageName,
		Verified: true,
		Serial:   "current", // no state directory: build-info.txt is not read
	}
	if img != want {
		t.Fatalf("Fetch = %+v, want %+v", img, want)
	}
	if files := fx.cacheFiles(t); len(files) != 1 {
		t.Fatalf("cache holds %v, want only the image", files)
	}
}

// A signature in ASCII armor is accepted as well as a binary one.
func TestFetchArmoredSignature(t *testing.T) {
	fx := newFixture(t)
	var sig bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&sig, fx.key, bytes.NewReader(fx.sums), nil); err != nil {
		t.Fatal(err)
	}
	fx.mirror.files[testDir+"SHA256SUMS.gpg"] = sig.Bytes()
	if _, err := fx.fetcher.Fetch(context.Background(), testSpec); err != nil {
		t.Fatal(err)
	}
}

func TestFetchRefuses(t *testing.T) {
	tests := []struct {
		name     string
		tamper   func(t *testing.T, fx *fixture)
		spec     Spec
		kind     errs.Kind
		contains []string
	}{{
		name: "tampered image",
		tamper: func(t *testing.T, fx *fixture) {
			fx.mirror.files[testDir+testImageName] = append([]byte("X"), fx.image[1:]...)
		},
		kind:     errs.KindBuild,
		contains: []string{testImageName, "tampered", "signed SHA256SUMS"},
	}, {
		name: "tampered SHA256SUMS",
		tamper: func(t *testing.T, fx *fixture) {
			fx.mirror.files[testDir+"SHA256SUMS"] = bytes.Replace(fx.sums, []byte("ab"), []byte("cd"), 1)
		},
		kind:     errs.KindBuild,
		contains: []string{"SHA256SUMS at", "not validly signed"},
	}, {
		name: "signed by another key",
		tamper: func(t *testing.T, fx *fixture) {
			fx.mirror.files[testDir+"SHA256SUMS.gpg"] = sign(t, newKey(t, "stranger"), fx.sums)
		},
		kind:     errs.KindBuild,
		contains: []string{"not validly signed"},
	}, {
		name:     "signature missing",
		tamper:   func(t *testing.T, fx *fixture) { delete(fx.mirror.files, testDir+"SHA256SUMS.gpg") },
		kind:     errs.KindNotFound,
		contains: []string{"SHA256SUMS.gpg", "not found"},
	}, {
		name: "missing entry",
		tamper: func(t *testing.T, fx *fixture) {
			sums := []byte(strings.Repeat("ab", 32) + " *noble-server-cloudimg-arm64.img\n")
			fx.mirror.files[testDir+"SHA256SUMS"] = sums
			fx.mirror.files[testDir+"SHA256SUMS.gpg"] = sign(t, fx.key, sums)
		},
		kind:     errs.KindBuild,
		contains: []string{"no entry for " + testImageName},
	}, {
		name:     "image 404",
		tamper:   func(t *testing.T, fx *fixture) { delete(fx.mirror.files, testDir+testImageName) },
		kind:     errs.KindNotFound,
		contains: []string{testImageName, "not found on mirror"},
	}, {
		name:     "unknown serial 404",
		spec:     Spec{Base: config.BaseNoble, Arch: config.ArchX64, Serial: "20200101"},
		kind:     errs.KindNotFound,
		contains: []string{"/noble/20200101/SHA256SUMS"},
	}, {
		name:     "pinned digest differs",
		spec:     Spec{Base: config.BaseNoble, Arch: config.ArchX64, SHA256: strings.Repeat("0", 64)},
		kind:     errs.KindBuild,
		contains: []string{"not the pinned"},
	}, {
		name: "server keeps failing",
		tamper: func(t *testing.T, fx *fixture) {
			fx.mirror.set(testDir+testImageName, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
		},
		kind:     errs.KindUnreachable,
		contains: []string{"giving up after 3 tries", "503"},
	}, {
		name: "forbidden",
		tamper: func(t *testing.T, fx *fixture) {
			fx.mirror.set(testDir+"SHA256SUMS", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusForbidden) })
		},
		kind:     errs.KindAuth,
		contains: []string{"refused access"},
	}, {
		name:     "server unreachable",
		tamper:   func(t *testing.T, fx *fixture) { fx.mirror.srv.Close() },
		kind:     errs.KindUnreachable,
		contains: []string{"cannot reach mirror"},
	}, {
		name:     "bad serial",
		spec:     Spec{Base: config.BaseNoble, Arch: config.ArchX64, Serial: "../../etc"},
		kind:     errs.KindUsage,
		contains: []string{"serial"},
	}, {
		name:     "unknown base",
		spec:     Spec{Base: "trusty", Arch: config.ArchX64},
		kind:     errs.KindUsage,
		contains: []string{"trusty"},
	}, {
		name:     "unknown arch",
		spec:     Spec{Base: config.BaseNoble, Arch: "mips"},
		kind:     errs.KindUsage,
		contains: []string{"mips"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFixture(t)
			if tt.tamper != nil {
				tt.tamper(t, fx)
			}
			spec := tt.spec
			if spec.Base == "" {
				spec = testSpec
			}
			img, err := fx.fetcher.Fetch(context.Background(), spec)
			if err == nil {
				t.Fatalf("Fetch succeeded with %+v, want a %v error", img, tt.kind)
			}
			if k := errs.KindOf(err); k != tt.kind {
				t.Errorf("kind %v, want %v (error: %v)", k, tt.kind, err)
			}
			for _, s := range tt.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if files := fx.cacheFiles(t); len(files) != 0 {
				t.Errorf("a refused fetch left %v in the cache", files)
			}
		})
	}
}

// A transient failure is retried and then succeeds.
func TestFetchRetriesTransientErrors(t *testing.T) {
	fx := newFixture(t)
	var failures atomic.Int32
	fx.mirror.set(testDir+testImageName, func(w http.ResponseWriter, r *http.Request) {
		if failures.Add(1) <= 2 {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(fx.image))
	})
	img, err := fx.fetcher.Fetch(context.Background(), testSpec)
	if err != nil {
		t.Fatal(err)
	}
	if img.SHA256 != hexSHA(fx.image) {
		t.Fatalf("digest %s, want %s", img.SHA256, hexSHA(fx.image))
	}
	if n := fx.mirror.count(testDir + testImageName); n != 3 {
		t.Fatalf("image requested %d times, want 3 (two 502s, then success)", n)
	}
}

func TestFetchCacheHitMakesNoImageRequest(t *testing.T) {
	fx := newFixture(t)
	first, err := fx.fetcher.Fetch(context.Background(), testSpec)
	if err != nil {
		t.Fatal(err)
	}
	second, err := fx.fetcher.Fetch(context.Background(), testSpec)
	if err != nil {
		t.Fatal(err)
	}
	if first != second {
		t.Fatalf("second fetch %+v differs from first %+v", second, first)
	}
	if n := fx.mirror.count(testDir + testImageName); n != 1 {
		t.Fatalf("image requested %d times, want 1", n)
	}
	if n := fx.mirror.count(testDir + "SHA256SUMS"); n != 2 {
		t.Fatalf("SHA256SUMS requested %d times, want 2 (it is checked fresh every time)", n)
	}
}

// A cached file that no longer matches SHA256SUMS is replaced.
func TestFetchReplacesCorruptCache(t *testing.T) {
	fx := newFixture(t)
	img, err := fx.fetcher.Fetch(context.Background(), testSpec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img.Path, []byte("bit rot"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := fx.fetcher.Fetch(context.Background(), testSpec); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(img.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, fx.image) {
		t.Fatal("corrupt cache entry was not replaced")
	}
	if n := fx.mirror.count(testDir + testImageName); n != 2 {
		t.Fatalf("image requested %d times, want 2", n)
	}
}

// cutAfter serves the first n bytes of body with the full Content-Length,
// then drops the connection.
func cutAfter(body []byte, n int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body[:n])
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	}
}

func TestFetchInterruptedDownloadLeavesNothing(t *testing.T) {
	fx := newFixture(t)
	fx.mirror.set(testDir+testImageName, cutAfter(fx.image, len(fx.image)/2))
	_, err := fx.fetcher.Fetch(context.Background(), testSpec)
	if !errs.Is(err, errs.KindUnreachable) {
		t.Fatalf("error %v, want KindUnreachable", err)
	}
	if n := fx.mirror.count(testDir + testImageName); n != 3 {
		t.Fatalf("image requested %d times, want 3 tries", n)
	}
	if files := fx.cacheFiles(t); len(files) != 0 {
		t.Fatalf("interrupted downloads left %v", files)
	}
}

// Cancelling the caller's context mid-download stops at once, unclassified
// (so errs reports it as interrupted), and leaves no file.
func TestFetchCancelledMidDownloadLeavesNothing(t *testing.T) {
	fx := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fx.mirror.set(testDir+testImageName, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(fx.image)))
		_, _ = w.Write(fx.image[:1000])
		w.(http.Flusher).Flush()
		cancel() // the client has the first bytes in flight; now the user presses Ctrl-C
		<-r.Context().Done()
	})
	_, err := fx.fetcher.Fetch(ctx, testSpec)
	if !errors.Is(err, context.Canceled) || errs.KindOf(err) != errs.KindInterrupted {
		t.Fatalf("error %v (kind %v), want an interrupted context.Canceled", err, errs.KindOf(err))
	}
	if n := fx.mirror.count(testDir + testImageName); n != 1 {
		t.Fatalf("image requested %d times, want 1 (no retry after cancel)", n)
	}
	if files := fx.cacheFiles(t); len(files) != 0 {
		t.Fatalf("cancelled download left %v", files)
	}
}

// A download whose body stops arriving is abandoned by the stall watchdog
// and retried.
func TestFetchStalledDownloadIsRetried(t *testing.T) {
	fx := newFixture(t)
	fx.fetcher.StallTimeout = 50 * time.Millisecond
	fx.fetcher.Attempts = 10 // a loaded machine may make a healthy try look stalled too
	release := make(chan struct{})
	defer close(release)
	var calls atomic.Int32
	fx.mirror.set(testDir+testImageName, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.Header().Set("Content-Length", fmt.Sprint(len(fx.image)))
			_, _ = w.Write(fx.image[:10])
			w.(http.Flusher).Flush()
			select { // stall until the client gives up on this request
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(fx.image))
	})
	if _, err := fx.fetcher.Fetch(context.Background(), testSpec); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n < 2 {
		t.Fatalf("image requested %d times, want a retry after the stall", n)
	}
}

// Concurrent fetches of one image all succeed with the same intact file.
func TestFetchConcurrent(t *testing.T) {
	fx := newFixture(t)
	const n = 4
	imgs := make([]Image, n)
	fails := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			imgs[i], fails[i] = fx.fetcher.Fetch(context.Background(), testSpec)
		})
	}
	wg.Wait()
	for i := range n {
		if fails[i] != nil {
			t.Fatalf("fetch %d: %v", i, fails[i])
		}
		if imgs[i] != imgs[0] {
			t.Fatalf("fetch %d returned %+v, fetch 0 %+v", i, imgs[i], imgs[0])
		}
	}
	got, err := os.ReadFile(imgs[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, fx.image) {
		t.Fatal("concurrent fetches corrupted the cached image")
	}
	if files := fx.cacheFiles(t); len(files) != 1 {
		t.Fatalf("cache holds %v, want only the image", files)
	}
}

func TestFetchLocalFile(t *testing.T) {
	content := []byte("a local qcow2")
	path := filepath.Join(t.TempDir(), "base.img")
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		spec         Spec
		kind         errs.Kind // KindInternal means success
		verified     bool
		logUnchecked bool
	}{
		{name: "pinned", spec: Spec{File: path, SHA256: strings.ToUpper(hexSHA(content))}, verified: true},
		{name: "unpinned", spec: Spec{File: path}, logUnchecked: true},
		{name: "wrong digest", spec: Spec{File: path, SHA256: strings.Repeat("1", 64)}, kind: errs.KindBuild},
		{name: "missing", spec: Spec{File: path + ".nope"}, kind: errs.KindUsage},
		{name: "directory", spec: Spec{File: filepath.Dir(path)}, kind: errs.KindUsage},
		{name: "malformed digest", spec: Spec{File: path, SHA256: "abc"}, kind: errs.KindUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			f := &Fetcher{CacheDir: t.TempDir(), Mirror: "http://127.0.0.1:1", Log: slog.New(slog.NewTextHandler(&logs, nil))}
			tt.spec.Base, tt.spec.Arch = config.BaseNoble, config.ArchX64
			img, err := f.Fetch(context.Background(), tt.spec)
			if tt.kind != errs.KindInternal {
				if errs.KindOf(err) != tt.kind {
					t.Fatalf("error %v (kind %v), want kind %v", err, errs.KindOf(err), tt.kind)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := Image{Path: path, SHA256: hexSHA(content), Size: int64(len(content)), Source: path, Verified: tt.verified}
			if img != want {
				t.Fatalf("Fetch = %+v, want %+v", img, want)
			}
			if got := strings.Contains(logs.String(), "unverified"); got != tt.logUnchecked {
				t.Fatalf("log mentions unverified = %v, want %v; log:\n%s", got, tt.logUnchecked, logs.String())
			}
		})
	}
}

func TestFetchRemovesStaleTemps(t *testing.T) {
	fx := newFixture(t)
	dir := filepath.Join(fx.fetcher.CacheDir, "noble", "current")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(dir, ".x.img.part-1")
	fresh := filepath.Join(dir, ".x.img.part-2")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * staleTempAge)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := fx.fetcher.Fetch(context.Background(), testSpec); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale partial download still there (%v)", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("a recent partial download (maybe another fetch's) was removed: %v", err)
	}
}

func TestDefaultCacheDir(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", "/xdg/cache")
	got, err := DefaultCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	if want := "/xdg/cache/github-runner-image-builder/base-images"; got != want {
		t.Fatalf("DefaultCacheDir = %q, want %q", got, want)
	}
}
