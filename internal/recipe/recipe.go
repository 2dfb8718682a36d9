// Package recipe renders the cloud-init user-data that turns an Ubuntu cloud
// image into a GitHub Actions runner image: one bash script, from an
// embedded template, per architecture and base. It does what the Python
// tool's recipe does (packages, proxy, armhf multiarch, users for GARM, the
// runner) with `set -euo pipefail`, retried apt and downloads, the runner
// tarball checked against its SHA-256, yq as a pinned binary checked against
// its published checksum, and caches and logs cleaned at the end.
//
// The template has no secret inputs. WithHostKey wraps a recipe (or a
// --user-data file) with the build's SSH host key, a secret, in a MIME part
// of its own: that user-data lives only as long as the builder.
package recipe

import (
	"bytes"
	_ "embed"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"text/template"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/release"
)

//go:embed recipe.sh.tmpl
var recipeTemplate string

// Params are the inputs of one rendering. None of them is secret.
type Params struct {
	Arch   config.Arch
	Base   config.Base
	Runner release.Release // resolved on the host; Runner.Arch must equal Arch
	Proxy  string          // host:port of an HTTP proxy, or ""
}

// YQVersion is the mikefarah/yq release installed in every image.
const YQVersion = "4.45.1"

// YQBinary returns the yq release asset for a runner arch and its SHA-384.
//
// The values are yq's own published checksums for v4.45.1 (the release's
// `checksums` asset, SHA-384 column), as mirrored in bazel-contrib/yq.bzl
// yq/toolchain/versions.bzl (base64 there, hex here). SHA-384 is used
// because it is the digest available for all four arches; sha384sum is in
// coreutils like sha256sum.
func YQBinary(a config.Arch) (asset, sha384 string) {
	switch a {
	case config.ArchX64:
		return "yq_linux_amd64", "86432d491a2ad4664aa07f42e8e7ac2a18052ed91c9bdd70503d96ecbff1940392ee365b8a2db7b84307029a39afb42c"
	case config.ArchARM64, config.ArchARM: // the armhf runner lives on an arm64 image
		return "yq_linux_arm64", "e0de81599ec4c719a77ea5c6193a3b4b38bbde425f6e031a5175b4153d7491ccb67cd5b455b8c10407c2942d789444b6"
	case config.ArchS390X:
		return "yq_linux_s390x", "0d1cf3e526f726fc03563416195b68dc487b6bbb4d426c1766d313432f9289d098190dac2c0dd242aaac42270d683f00"
	case config.ArchPPC64LE:
		return "yq_linux_ppc64le", "a67cc3cfb8e7e1bfb5c0e79ab1a114eaae40490859c34533eac11e873a73b6a420954eb29d3912f27e0dc3fa2a1b9cbd"
	default:
		return "", ""
	}
}

// Packages returns the apt packages of an image (inventory §3.1), or nil
// for a pair that cannot be built (armhf before noble).
func Packages(a config.Arch, b config.Base) []string {
	if !slices.Contains(config.Arches(), a) || !slices.Contains(config.Bases(), b) || !b.SupportsArch(a) {
		return nil
	}
	pkgs := []string{"build-essential", "cargo", "docker.io", "gh", "jq", "npm", "pkg-config",
		"python-is-python3", "python3-dev", "python3-pip", "rustc", "shellcheck", "socat", "tar",
		"time", "unzip", "wget"}
	switch a {
	case config.ArchS390X, config.ArchPPC64LE:
		pkgs = append(pkgs, "dotnet-runtime-8.0")
	case config.ArchARM:
		pkgs = slices.DeleteFunc(pkgs, func(p string) bool { return p == "cargo" || p == "rustc" })
		pkgs = append(pkgs, "libc6:armhf", "libatomic1:armhf", "rustup", "docker-buildx")
		switch b {
		case config.BaseNoble:
			pkgs = append(pkgs, "libicu74:armhf")
		case config.BaseResolute:
			pkgs = append(pkgs, "libicu78:armhf")
		}
	}
	return pkgs
}

// templateData is what the template sees; every string in it is validated
// before rendering and shell-quoted by the template.
type templateData struct {
	Arch        config.Arch
	Base        config.Base
	BaseVersion string
	NativeArch  string // dpkg architecture of the image
	Runner      release.Release
	RunnerDir   string
	YQVersion   string
	YQAsset     string
	YQSHA384    string
	Proxy       string
	Packages    []string
}

// Render returns the user-data script for p.
func Render(p Params) ([]byte, error) {
	if err := validate(p); err != nil {
		return nil, err
	}
	yqAsset, yqSHA := YQBinary(p.Arch)
	data := templateData{
		Arch: p.Arch, Base: p.Base, BaseVersion: p.Base.Version(), NativeArch: p.Arch.Debian(),
		Runner: p.Runner, RunnerDir: "/home/ubuntu/actions-runner",
		YQVersion: YQVersion, YQAsset: yqAsset, YQSHA384: yqSHA,
		Proxy: p.Proxy, Packages: Packages(p.Arch, p.Base),
	}
	tmpl, err := template.New("recipe.sh").Option("missingkey=error").
		Funcs(template.FuncMap{"sh": shellQuote}).Parse(recipeTemplate)
	if err != nil {
		return nil, errs.Wrap(errs.KindInternal, err, "parsing the embedded recipe template")
	}
	var out bytes.Buffer
	if err := tmpl.Execute(&out, data); err != nil {
		return nil, errs.Wrap(errs.KindInternal, err, "rendering the recipe for %s on %s", p.Arch, p.Base)
	}
	return out.Bytes(), nil
}

var safeURLRE = regexp.MustCompile(`^[A-Za-z0-9._~:/?#\[\]@!$&()*+,;=%-]+$`)

func validate(p Params) error {
	if !slices.Contains(config.Arches(), p.Arch) {
		return errs.Usage("--arch %q: not a runner architecture (allowed: x64, arm64, s390x, ppc64le, arm)", p.Arch)
	}
	if !slices.Contains(config.Bases(), p.Base) {
		return errs.Usage("--base-image %q: not an Ubuntu base (allowed: focal, jammy, noble, resolute)", p.Base)
	}
	if err := config.CheckPair(p.Arch, p.Base); err != nil {
		return errs.Wrap(errs.KindUsage, err, "cannot build this image")
	}
	r := p.Runner
	if r.Arch != p.Arch {
		return errs.New(errs.KindInternal, "runner release is for arch %q, the image for %q", r.Arch, p.Arch)
	}
	if err := release.ValidateVersion(r.Version); err != nil {
		return err
	}
	if err := release.ValidateSHA256(r.SHA256); err != nil {
		return err
	}
	if err := validateURL(r.URL); err != nil {
		return err
	}
	return ValidateProxy(p.Proxy)
}

func validateURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || !safeURLRE.MatchString(s) {
		return errs.Usage("runner tarball URL %q: use an http(s) URL without credentials, spaces or quotes (user-data stays in the image)", redact(u, s))
	}
	return nil
}

func redact(u *url.URL, raw string) string {
	if u != nil {
		return u.Redacted()
	}
	return raw
}

// ValidateProxy checks a --proxy value (config.ValidateProxy is the one rule).
func ValidateProxy(s string) error { return config.ValidateProxy(s) }

// shellQuote returns s as one single-quoted shell word.
func shellQuote(v any) string {
	s := fmt.Sprint(v)
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
