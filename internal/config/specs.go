package config

import (
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// InitSpec is a validated `init`: seed a cloud (or, for the local builder,
// the cache) with base images, and the cloud with a keypair and a security group.
type InitSpec struct {
	Cloud        string   // --os-cloud; "" only with the local builder
	CloudsPaths  []string // where clouds.yaml is looked up (nil: the openstack CLI's search path)
	Arch         Arch
	Prefix       string
	Bases        []Base // default: every base, as the Python tool
	BaseImageURL string // mirror of https://cloud-images.ubuntu.com/, or ""
	Builder      BuilderKind
	CacheDir     string    // where verified base images are kept
	HostProxy    HostProxy // this host's proxy for the mirror; zero: the environment's

	// BaseImageFile is a local image file used instead of the mirror
	// (offline hosts, tests); it needs exactly one base.
	BaseImageFile string
	// BaseImageSerial pins a dated serial, e.g. 20251113 ("" is current).
	BaseImageSerial string
	// BaseImageSHA256 is the expected digest of the image (64 hex digits, or "").
	BaseImageSHA256 string
	// BaseImageProperties are extra Glance properties of the uploaded base
	// images (e.g. hw_disk_bus); builds made from them inherit them.
	BaseImageProperties map[string]string
}

var (
	serialRE      = regexp.MustCompile(`^(current|[0-9]{8}(\.[0-9]{1,3})?)$`)
	propertyKeyRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,254}$`)
)

// ReservedProperties are the image properties the builder sets itself;
// --base-image-property may not set them.
func ReservedProperties() []string {
	return []string{"architecture", "os_distro", "os_version", "os_type"}
}

// ReservedPropertyPrefix starts the builder's own metadata properties
// (the builder refuses --base-image-property values for those it sets).
const ReservedPropertyPrefix = "grib_"

// ParseProperties parses KEY=VALUE items of a repeatable flag.
func ParseProperties(flag string, items []string) (map[string]string, error) {
	out := map[string]string{}
	for _, it := range items {
		k, v, ok := strings.Cut(it, "=")
		if !ok {
			return nil, errs.Usage("%s %q: use KEY=VALUE", flag, it)
		}
		if _, dup := out[k]; dup {
			return nil, errs.Usage("%s: %s is given twice", flag, k)
		}
		out[k] = v
	}
	if err := validateProperties(flag, out); err != nil {
		return nil, err
	}
	return out, nil
}

func validateProperties(flag string, props map[string]string) error {
	for k, v := range props {
		switch {
		case !propertyKeyRE.MatchString(k):
			return errs.Usage("%s %q: a property name is 1-255 letters, digits, '_', '.', ':' or '-'", flag, k)
		case slices.Contains(ReservedProperties(), k):
			return errs.Usage("%s %s: the builder sets this property itself", flag, k)
		case len(v) > 255 || strings.ContainsFunc(v, isControl):
			return errs.Usage("%s %s: the value must be at most 255 bytes without control characters", flag, k)
		}
	}
	return nil
}

// Validate checks every field of s.
func (s InitSpec) Validate() error {
	if err := CheckArchBases(s.Arch, s.Bases); err != nil {
		return err
	}
	if err := ValidatePrefix(s.Prefix); err != nil {
		return errs.Wrap(errs.KindUsage, err, "")
	}
	if err := ValidateHTTPURL("base_image_url", s.BaseImageURL, true); err != nil {
		return err
	}
	if strings.TrimSpace(s.CacheDir) == "" {
		return errs.Usage("--cache-dir: give a directory (default: $XDG_CACHE_HOME/%s)", AppName)
	}
	if s.BaseImageFile != "" {
		if len(s.Bases) != 1 {
			return errs.Usage("--base-image-file needs exactly one --base-image (the file is one image)")
		}
		if s.BaseImageURL != "" || s.BaseImageSerial != "" {
			return errs.Usage("--base-image-file replaces the download: drop --base-image-url and --base-image-serial")
		}
	}
	if s.BaseImageSerial != "" && !serialRE.MatchString(s.BaseImageSerial) {
		return errs.Usage("--base-image-serial %q: use current or a dated serial such as 20251113", s.BaseImageSerial)
	}
	if s.BaseImageSHA256 != "" {
		if !sha256RE.MatchString(s.BaseImageSHA256) {
			return errs.Usage("--base-image-sha256: use 64 lowercase hex digits")
		}
		if len(s.Bases) != 1 {
			return errs.Usage("--base-image-sha256 needs exactly one --base-image (it is one image's digest)")
		}
	}
	if err := validateProperties("--base-image-property", s.BaseImageProperties); err != nil {
		return err
	}
	switch s.Builder {
	case BuilderOpenStack:
		if s.Cloud == "" {
			return errs.Usage("--os-cloud (or OS_CLOUD) is required: name the clouds.yaml cloud to seed")
		}
	case BuilderLocal:
	default:
		return errs.Usage("--builder %q: use openstack or local", s.Builder)
	}
	return nil
}

// CheckArchBases checks the arch and that it can be built on every base
// listed (see BasesFor for the default list).
func CheckArchBases(a Arch, bases []Base) error {
	if _, err := ParseArchFlag(string(a)); err != nil {
		return err
	}
	if len(bases) == 0 {
		return errs.Usage("--base-image: list at least one base")
	}
	for _, b := range bases {
		if err := CheckPair(a, b); err != nil {
			return errs.Wrap(errs.KindUsage, err, "")
		}
	}
	return nil
}

// BasesFor is `init`'s default base list: every base arch can be built on
// (all four, as the Python tool, except focal and jammy for armhf).
func BasesFor(a Arch) []Base {
	var out []Base
	for _, b := range Bases() {
		if b.SupportsArch(a) {
			out = append(out, b)
		}
	}
	return out
}

// SweepSpec is a validated `sweep`: remove what crashed runs of a prefix left behind.
type SweepSpec struct {
	Cloud       string
	CloudsPaths []string // where clouds.yaml is looked up (nil: the openstack CLI's search path)
	Prefix      string
	OlderThan   time.Duration // only resources at least this old are removed
	DryRun      bool          // list, remove nothing
	// Server, when set, limits the sweep to this one builder server (ID) of
	// Prefix, whatever its age: what `run --keep-on-failure` left.
	Server string
}

// MinSweepAge is the smallest --older-than: younger resources may belong to
// a build that is still running.
const MinSweepAge = time.Minute

// Validate checks every field of s.
func (s SweepSpec) Validate() error {
	if s.Cloud == "" {
		return errs.Usage("--os-cloud (or OS_CLOUD) is required: name the clouds.yaml cloud to sweep")
	}
	if err := ValidatePrefix(s.Prefix); err != nil {
		return errs.Wrap(errs.KindUsage, err, "")
	}
	if s.Server != "" && strings.TrimSpace(s.Server) != s.Server {
		return errs.Usage("--server %q: give the builder server's ID as `run --keep-on-failure` printed it", s.Server)
	}
	if s.OlderThan < MinSweepAge {
		return errs.Usage("--older-than %s: use a duration of at least %s, e.g. 6h (younger resources may belong to a running build)", s.OlderThan, MinSweepAge)
	}
	return nil
}

// LatestQuery is a validated `latest-build-id`.
type LatestQuery struct {
	Cloud       string
	CloudsPaths []string // where clouds.yaml is looked up (nil: the openstack CLI's search path)
	ImageName   string
	AnyStatus   bool // also images still queued or saving
}

// Validate checks every field of q.
func (q LatestQuery) Validate() error {
	if err := ValidateImageName(q.ImageName); err != nil {
		return errs.Wrap(errs.KindUsage, err, "")
	}
	if q.Cloud == "" {
		return errs.Usage("--os-cloud (or OS_CLOUD) is required: name the clouds.yaml cloud to look in")
	}
	return nil
}

// EmptyPrefixDir is the state directory name of the empty prefix (the
// Python tool's default); no valid prefix starts with '_'.
const EmptyPrefixDir = "_empty"

// AppName names the tool's directories.
const AppName = "github-runner-image-builder"

// CacheDir is the default cache of verified base images:
// $XDG_CACHE_HOME/github-runner-image-builder, else ~/.cache/... .
// getenv is os.Getenv (a parameter so that tests choose the environment).
func CacheDir(getenv func(string) string) (string, error) {
	return xdgDir(getenv, "XDG_CACHE_HOME", ".cache")
}

// StateDir is the per-prefix state (the builder's SSH key, locks):
// $XDG_STATE_HOME/github-runner-image-builder/<prefix>, else
// ~/.local/state/...; the empty prefix (the Python tool's default) is
// "_empty", a name no valid prefix can take.
func StateDir(getenv func(string) string, prefix string) (string, error) {
	base, err := xdgDir(getenv, "XDG_STATE_HOME", filepath.Join(".local", "state"))
	if err != nil {
		return "", err
	}
	if prefix == "" {
		return filepath.Join(base, EmptyPrefixDir), nil
	}
	if err := ValidatePrefix(prefix); err != nil {
		return "", errs.Wrap(errs.KindUsage, err, "")
	}
	return filepath.Join(base, prefix), nil
}

// StateRoot is the directory holding every prefix's StateDir.
func StateRoot(getenv func(string) string) (string, error) {
	return xdgDir(getenv, "XDG_STATE_HOME", filepath.Join(".local", "state"))
}

// ManifestsDir is where a prefix's state directory keeps the manifests of
// the images its builds published, one <image ID>.json each.
func ManifestsDir(stateDir string) string { return filepath.Join(stateDir, "manifests") }

// ManifestFile is the file of image id's manifest in dir (ManifestsDir, or
// the service's directory beside its latest file); "" when id cannot be a
// file name.
func ManifestFile(dir, id string) string {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\\\x00") {
		return ""
	}
	return filepath.Join(dir, id+".json")
}

func xdgDir(getenv func(string) string, xdgVar, homeRel string) (string, error) {
	if d := getenv(xdgVar); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, AppName), nil
	}
	home := getenv("HOME")
	if home == "" || !filepath.IsAbs(home) {
		return "", errs.Usage("neither %s nor HOME is an absolute path: set one of them", xdgVar)
	}
	return filepath.Join(home, homeRel, AppName), nil
}

// SweptResource is one resource `sweep` removed (or, in a dry run, would
// remove), as reported on stdout.
type SweptResource struct {
	Kind string `json:"kind"` // server, keypair, image, security-group
	Name string `json:"name"`
	ID   string `json:"id"`
}
