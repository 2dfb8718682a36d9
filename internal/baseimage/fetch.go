// Package baseimage downloads Ubuntu cloud images and verifies them before
// anything boots them.
//
// Trust chain: the image's SHA-256 must match its entry in SHA256SUMS, and
// SHA256SUMS must carry a valid detached OpenPGP signature (SHA256SUMS.gpg)
// by a key in Fetcher.Keyring, by default Ubuntu's cloud image signing key
// embedded in this package (UbuntuKeyring). HTTPS alone is not trusted: a
// mirror (--base-image-url) may be anyone's. Nor does the signature cover the
// serial: with Fetcher.StateDir set, an unpinned fetch older than the newest
// serial accepted before is refused (serial.go).
//
// Images are cached under CacheDir as <codename>/<serial>/<sha256>-<file>; a
// cached file is reused only while its digest still matches the freshly
// downloaded and verified SHA256SUMS. Downloads go to a unique temporary file
// in the same directory, are fsynced and verified, then renamed into place,
// so concurrent fetches of one image never see or leave a partial file.
//
// Error kinds (internal/errs): a bad or missing signature, a checksum
// mismatch, a missing SHA256SUMS entry or a digest other than the pinned one
// are KindBuild ("the build failed"; KindVerify is kept for the built image);
// the message names the file and the mirror. HTTP 404/410 is KindNotFound,
// 401/403 KindAuth, a server that cannot be reached or keeps failing
// KindUnreachable, a malformed Spec KindUsage.
//
// The embedded key (ubuntu-cloudimage-key.asc) is the one entity with
// fingerprint UbuntuSigningFingerprint; refresh it with
// `gpg --export-options export-minimal --export --armor D2EB44626FDDC30B513D5BB71A5D6C4C7DB87C81`
// from a keyring that holds it (Ubuntu's ubuntu-cloudimage-keyring package);
// TestUbuntuKeyringFingerprint checks the result.
package baseimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// DefaultMirror is where Ubuntu publishes its cloud images.
const DefaultMirror = "https://cloud-images.ubuntu.com"

// SerialCurrent is the serial of the newest published image.
const SerialCurrent = "current"

// Defaults of the Fetcher's tuning fields.
const (
	defaultAttempts     = 4
	defaultRetryDelay   = 2 * time.Second
	maxRetryDelay       = 30 * time.Second
	defaultStallTimeout = 60 * time.Second
	staleTempAge        = 24 * time.Hour
)

// Spec names one base image.
type Spec struct {
	Base config.Base
	Arch config.Arch
	// Serial is "current" (the default when empty) or a dated serial such
	// as "20251113" or "20251113.1", to pin a known-good image.
	Serial string
	// File, when set, is a local image file used instead of the mirror
	// (offline hosts). There is no signed checksum for it: set SHA256 to
	// check it, otherwise it is used unverified (and a warning is logged).
	File string
	// SHA256, when set, is the expected hex digest: for a mirror image the
	// signed SHA256SUMS entry must equal it; for File the file must.
	SHA256 string
}

// FileName is the image's file name on the mirror, e.g. noble-server-cloudimg-amd64.img.
func (s Spec) FileName() string {
	return fmt.Sprintf("%s-server-cloudimg-%s.img", s.Base, s.Arch.CloudImage())
}

func (s Spec) serial() string {
	if s.Serial == "" {
		return SerialCurrent
	}
	return s.Serial
}

var serialRE = regexp.MustCompile(`^(current|[0-9]{8}(\.[0-9]{1,3})?)$`)

func (s Spec) validate() error {
	if s.Base.Version() == "" {
		return errs.Usage("unknown base image %q (allowed: %v)", s.Base, config.Bases())
	}
	known := false
	for _, a := range config.Arches() {
		known = known || a == s.Arch
	}
	if !known {
		return errs.Usage("unknown architecture %q (allowed: %v)", s.Arch, config.Arches())
	}
	if !serialRE.MatchString(s.serial()) {
		return errs.Usage("base image serial %q: use \"current\" or a dated serial such as 20251113", s.Serial)
	}
	if s.SHA256 != "" && !isHexDigest(strings.ToLower(s.SHA256)) {
		return errs.Usage("--base-image-sha256 %q is not 64 hex digits", s.SHA256)
	}
	return nil
}

// Image is a verified base image on local disk.
type Image struct {
	Path   string // absolute path of the image file (in the cache, or Spec.File)
	SHA256 string // lower-case hex digest of the file
	Size   int64
	Source string // the URL or file it came from
	// Serial is the mirror's serial the image is of ("current" when the
	// mirror did not say which); "" for a local file.
	Serial string
	// Verified is true when the digest was checked against a signed
	// SHA256SUMS or Spec.SHA256; false only for an unpinned local file.
	Verified bool
}

// Fetcher downloads and verifies base images. The zero value of each field
// picks its default; a Fetcher is safe for concurrent use.
type Fetcher struct {
	Mirror   string       // base URL; DefaultMirror when empty
	CacheDir string       // DefaultCacheDir() when empty
	HTTP     *http.Client // a client with connect/header timeouts when nil
	// Proxy is the proxy of that default client (nil: the environment's).
	Proxy   func(*http.Request) (*url.URL, error)
	Keyring openpgp.EntityList // keys trusted to sign SHA256SUMS; UbuntuKeyring() when nil
	Log     *slog.Logger       // discards when nil
	// StateDir, when set, holds the newest serial accepted per base and
	// arch: an unpinned fetch of an older serial is refused (see
	// BuildInfoPath). Empty means no rollback check.
	StateDir string
	// Now is the clock the serial's date is checked against; time.Now
	// when nil.
	Now func() time.Time

	Attempts     int           // tries per HTTP request; 4 when 0
	RetryDelay   time.Duration // first wait between tries, doubled up to 30 s; 2 s when 0
	StallTimeout time.Duration // a download that receives nothing this long is retried; 60 s when 0
}

// DefaultCacheDir is $XDG_CACHE_HOME/github-runner-image-builder/base-images
// (~/.cache/... when XDG_CACHE_HOME is unset).
func DefaultCacheDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("finding the cache directory (set XDG_CACHE_HOME or --cache-dir): %w", err)
	}
	return filepath.Join(d, "github-runner-image-builder", "base-images"), nil
}

// Fetch returns a verified local copy of the base image s names, from the
// cache when a verified copy is there, else downloaded from the mirror; or
// s.File, checked against s.SHA256 when given.
func (f *Fetcher) Fetch(ctx context.Context, s Spec) (Image, error) {
	if err := s.validate(); err != nil {
		return Image{}, err
	}
	s.SHA256 = strings.ToLower(s.SHA256)
	if s.File != "" {
		return f.fetchFile(ctx, s)
	}
	return f.fetchMirror(ctx, s)
}

func (f *Fetcher) fetchFile(ctx context.Context, s Spec) (Image, error) {
	path, err := filepath.Abs(s.File)
	if err != nil {
		return Image{}, fmt.Errorf("base image file %s: %w", s.File, err)
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return Image{}, errs.Usage("base image file %s does not exist", s.File)
	case err != nil:
		return Image{}, errs.Wrap(errs.KindUsage, err, "base image file %s cannot be read", s.File)
	case !fi.Mode().IsRegular():
		return Image{}, errs.Usage("base image file %s is not a regular file", s.File)
	}
	sum, size, err := hashFile(ctx, path)
	if err != nil {
		return Image{}, fmt.Errorf("hashing base image file %s: %w", s.File, err)
	}
	img := Image{Path: path, SHA256: sum, Size: size, Source: path, Verified: s.SHA256 != ""}
	if s.SHA256 == "" {
		f.log().Warn("base image file has no checksum source; using it unverified (pass --base-image-sha256 to check it)",
			"file", path, "sha256", sum)
		return img, nil
	}
	if sum != s.SHA256 {
		return Image{}, errs.New(errs.KindBuild, "base image file %s has sha256 %s, not the expected %s", s.File, sum, s.SHA256)
	}
	f.log().Info("base image file verified", "file", path, "sha256", sum)
	return img, nil
}

func (f *Fetcher) fetchMirror(ctx context.Context, s Spec) (Image, error) {
	mirror := strings.TrimRight(f.Mirror, "/")
	if mirror == "" {
		mirror = DefaultMirror
	}
	dirURL := fmt.Sprintf("%s/%s/%s/", mirror, s.Base, s.serial())
	name := s.FileName()

	seen := s.serial()
	if f.StateDir != "" && seen == SerialCurrent {
		var err error
		if seen, err = f.currentSerial(ctx, mirror, dirURL); err != nil {
			return Image{}, err
		}
	}
	want, err := f.verifiedDigest(ctx, mirror, dirURL, name)
	if err != nil {
		return Image{}, err
	}
	if s.SHA256 != "" && want != s.SHA256 {
		return Image{}, errs.New(errs.KindBuild, "SHA256SUMS at %s lists %s with sha256 %s, not the pinned %s", dirURL, name, want, s.SHA256)
	}
	if err := f.checkSerial(s, dirURL, seen, want); err != nil {
		return Image{}, err
	}

	cache := f.CacheDir
	if cache == "" {
		if cache, err = DefaultCacheDir(); err != nil {
			return Image{}, err
		}
	}
	dir := filepath.Join(cache, string(s.Base), s.serial())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Image{}, fmt.Errorf("creating the base image cache %s: %w", dir, err)
	}
	final := filepath.Join(dir, want+"-"+name)
	img := Image{Path: final, SHA256: want, Source: dirURL + name, Verified: true, Serial: seen}

	if size, ok := f.cached(ctx, final, want); ok {
		f.log().Info("base image cache hit", "image", name, "path", final, "sha256", want)
		img.Size = size
		if err := f.recordSerial(ctx, s, seen, want); err != nil {
			return Image{}, err
		}
		return img, nil
	}
	if err := ctx.Err(); err != nil {
		return Image{}, fmt.Errorf("fetching %s: %w", img.Source, err)
	}
	f.removeStaleTemps(dir)

	start := time.Now()
	f.log().Info("downloading base image", "url", img.Source, "path", final)
	size, err := f.download(ctx, img.Source, mirror, final, want)
	if err != nil {
		return Image{}, err
	}
	f.log().Info("base image downloaded and verified", "image", name, "bytes", size,
		"seconds", time.Since(start).Round(time.Second).Seconds(), "sha256", want)
	img.Size = size
	if err := f.recordSerial(ctx, s, seen, want); err != nil {
		return Image{}, err
	}
	return img, nil
}

// verifiedDigest fetches SHA256SUMS and its signature from dirURL, checks the
// signature and returns the digest listed for name.
func (f *Fetcher) verifiedDigest(ctx context.Context, mirror, dirURL, name string) (string, error) {
	sums, err := f.getSmall(ctx, dirURL+"SHA256SUMS", mirror)
	if err != nil {
		return "", err
	}
	sig, err := f.getSmall(ctx, dirURL+"SHA256SUMS.gpg", mirror)
	if err != nil {
		return "", err
	}
	signer, err := f.checkSignature(sums, sig)
	if err != nil {
		return "", errs.Wrap(errs.KindBuild, err, "SHA256SUMS at %s is not validly signed by a trusted key (SHA256SUMS.gpg); refusing its images", dirURL)
	}
	f.log().Debug("SHA256SUMS signature verified", "url", dirURL+"SHA256SUMS", "signer", signer)
	entries, err := ParseSHA256SUMS(sums)
	if err != nil {
		return "", errs.Wrap(errs.KindBuild, err, "SHA256SUMS at %s is malformed", dirURL)
	}
	want, ok := entries[name]
	if !ok {
		return "", errs.New(errs.KindBuild, "SHA256SUMS at %s has no entry for %s (is the image published for this base and arch?)", dirURL, name)
	}
	return want, nil
}

// checkSignature verifies the detached signature sig (binary or armored)
// over sums and returns the signer's fingerprint.
func (f *Fetcher) checkSignature(sums, sig []byte) (string, error) {
	kr := f.Keyring
	if kr == nil {
		var err error
		if kr, err = UbuntuKeyring(); err != nil {
			return "", err
		}
	}
	check := openpgp.CheckDetachedSignature
	if bytes.HasPrefix(bytes.TrimSpace(sig), []byte("-----BEGIN PGP SIGNATURE-----")) {
		check = openpgp.CheckArmoredDetachedSignature
	}
	signer, err := check(kr, bytes.NewReader(sums), bytes.NewReader(sig), nil)
	if err != nil {
		return "", err
	}
	return strings.ToUpper(hex.EncodeToString(signer.PrimaryKey.Fingerprint)), nil
}

// cached reports whether path holds a file with digest want. A file that
// does not match is removed, so that a fresh download replaces it.
func (f *Fetcher) cached(ctx context.Context, path, want string) (int64, bool) {
	sum, size, err := hashFile(ctx, path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false
	}
	if err == nil && sum == want {
		return size, true
	}
	if ctx.Err() == nil {
		f.log().Warn("cached base image does not match SHA256SUMS; downloading it again", "path", path, "sha256", sum, "want", want, "error", err)
		_ = os.Remove(path)
	}
	return 0, false
}

// download fetches url into final, verifying that its digest is want.
func (f *Fetcher) download(ctx context.Context, url, mirror, final, want string) (int64, error) {
	var size int64
	err := f.retry(ctx, url, mirror, func(ctx context.Context) (bool, error) {
		n, retryable, err := f.downloadOnce(ctx, url, mirror, final, want)
		size = n
		return retryable, err
	})
	return size, err
}

// downloadOnce is one attempt of download. The temporary file is removed on
// every path except success, where it has been renamed to final.
func (f *Fetcher) downloadOnce(ctx context.Context, url, mirror, final, want string) (size int64, retryable bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	resp, retryable, err := f.get(ctx, url, mirror)
	if err != nil {
		return 0, retryable, err
	}
	defer resp.Body.Close()

	tmp, err := os.CreateTemp(filepath.Dir(final), "."+filepath.Base(final)+".part-*")
	if err != nil {
		return 0, false, fmt.Errorf("creating a temporary file in the base image cache: %w", err)
	}
	renamed := false
	defer func() {
		if !renamed {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()

	// A body that stops arriving cancels this attempt (and is retried)
	// instead of hanging until the caller's deadline.
	stall := f.StallTimeout
	if stall <= 0 {
		stall = defaultStallTimeout
	}
	watchdog := time.AfterFunc(stall, cancel)
	defer watchdog.Stop()
	body := &progressReader{r: resp.Body, onRead: func() { watchdog.Reset(stall) }}

	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), body)
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = fmt.Errorf("received %d of %d bytes", n, resp.ContentLength)
	}
	if err != nil {
		// Cut connections, short bodies and stalls are worth another try;
		// retry stops by itself when the caller's ctx has ended.
		return 0, true, fmt.Errorf("downloading %s: %w", url, err)
	}
	if err := tmp.Sync(); err != nil {
		return 0, false, fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return 0, false, fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return 0, false, errs.New(errs.KindBuild, "%s from mirror %s has sha256 %s but the signed SHA256SUMS says %s; refusing it (a damaged or tampered download)", url, mirror, got, want)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return 0, false, fmt.Errorf("publishing %s in the cache: %w", final, err)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return 0, false, fmt.Errorf("publishing %s in the cache: %w", final, err)
	}
	renamed = true
	syncDir(filepath.Dir(final))
	return n, false, nil
}
