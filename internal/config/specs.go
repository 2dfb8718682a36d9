package config

import (
	"path/filepath"
	"strings"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// InitSpec is a validated `init`: seed a cloud (or, for the local builder,
// the cache) with base images, and the cloud with a keypair and a security group.
type InitSpec struct {
	Cloud        string // --os-cloud; "" only with the local builder
	Arch         Arch
	Prefix       string
	Bases        []Base // default: every base, as the Python tool
	BaseImageURL string // mirror of https://cloud-images.ubuntu.com/, or ""
	Builder      BuilderKind
	CacheDir     string // where verified base images are kept
}

// Validate checks every field of s.
func (s InitSpec) Validate() error {
	if err := CheckArchBases(s.Arch, s.Bases); err != nil {
		return err
	}
	if err := ValidatePrefix(s.Prefix); err != nil {
		return errs.Wrap(errs.KindUsage, err, "")
	}
	if err := ValidateHTTPURL("--base-image-url", s.BaseImageURL, true); err != nil {
		return err
	}
	if strings.TrimSpace(s.CacheDir) == "" {
		return errs.Usage("--cache-dir: give a directory (default: $XDG_CACHE_HOME/%s)", AppName)
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
	Cloud     string
	Prefix    string
	OlderThan time.Duration // only resources at least this old are removed
	DryRun    bool          // list, remove nothing
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
	if s.OlderThan < MinSweepAge {
		return errs.Usage("--older-than %s: use a duration of at least %s, e.g. 6h (younger resources may belong to a running build)", s.OlderThan, MinSweepAge)
	}
	return nil
}

// LatestQuery is a validated `latest-build-id`.
type LatestQuery struct {
	Cloud     string
	ImageName string
	AnyStatus bool // also images still queued or saving
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
