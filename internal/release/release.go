// Package release resolves the actions/runner release that goes into an
// image: "latest" becomes a version, and the tarball's SHA-256 for the
// architecture is read from the release on the host, never in the guest.
//
// The SHA-256 comes from the markers in the release notes
//
//	<!-- BEGIN SHA linux-<arch> -->HEX<!-- END SHA linux-<arch> -->
//
// and, when a release has none for the arch, from the asset's "digest"
// field ("sha256:HEX") that GitHub computes for every uploaded asset. A
// caller can pin the checksum (--runner-sha256); with the version pinned
// too, nothing is fetched at all (air-gapped hosts, offline --dry-run).
package release

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// Defaults of a Resolver's fields.
const (
	DefaultAPIURL = "https://api.github.com"
	// DefaultRepo is the release repository the Python tool uses for every
	// arch (actions/runner publishes no s390x or ppc64le tarballs).
	DefaultRepo = "canonical/github-actions-runner"
	// DefaultTimeout bounds one API request when Resolver.HTTP is nil.
	DefaultTimeout = 60 * time.Second
	// maxBody caps how much of an API answer is read (release notes are a
	// few KiB; a release with many assets a few hundred).
	maxBody = 8 << 20
)

// Release is a resolved runner release for one architecture.
type Release struct {
	Repo    string      // owner/name of the release repository
	Version string      // X.Y.Z, without the leading "v"
	Arch    config.Arch // the runner architecture
	URL     string      // where the guest downloads the tarball
	SHA256  string      // 64 lowercase hex digits of the tarball
}

// Resolver looks runner releases up through the GitHub REST API.
// The zero value works: every field has a default.
type Resolver struct {
	APIURL string // default DefaultAPIURL
	Repo   string // owner/name; default DefaultRepo
	// Token, if set, is sent as "Authorization: Bearer"; it is never logged.
	Token string
	// HTTP is the client for API requests; nil means one with DefaultTimeout.
	HTTP *http.Client
	// DownloadBase, if set, is a mirror: the tarball URL becomes
	// DownloadBase + "/v<ver>/actions-runner-linux-<arch>-<ver>.tar.gz".
	DownloadBase string
	// Log receives one line per resolution; nil discards.
	Log *slog.Logger
}

var (
	versionRE = regexp.MustCompile(`^(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})$`)
	sha256RE  = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
	repoRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}/[A-Za-z0-9_.-]{1,100}$`)
)

// ValidateVersion checks a resolved runner version: X.Y.Z, never empty
// (config.ValidateRunnerVersion is the one rule; "" there means latest).
func ValidateVersion(v string) error {
	if v == "" {
		return errs.Usage("--runner-version: empty; use X.Y.Z, e.g. 2.330.0")
	}
	return config.ValidateRunnerVersion(v)
}

// ValidateSHA256 checks a resolved tarball checksum: 64 hex digits, never
// empty (config.ValidateRunnerSHA256 is the one rule).
func ValidateSHA256(s string) error {
	if s == "" {
		return errs.Usage("--runner-sha256: empty; use the 64 hex digits of the tarball's SHA-256")
	}
	return config.ValidateRunnerSHA256(strings.ToLower(s))
}

// TarballName is the release asset of the runner for arch a at version v.
func TarballName(a config.Arch, v string) string {
	return fmt.Sprintf("actions-runner-linux-%s-%s.tar.gz", a.Runner(), v)
}

// IsLatest reports whether version asks for the newest release.
func IsLatest(version string) bool { return version == "" || version == "latest" }

// Resolve returns the release of the runner for arch at version ("" or
// "latest" for the newest release, else X.Y.Z). pinnedSHA, if not empty,
// is used instead of the release's checksum; with version X.Y.Z and
// pinnedSHA both given, nothing is fetched.
//
// The checksum is reported as the release states it: it is the guest that
// checks the downloaded tarball against it, so a wrong one fails the build.
func (r *Resolver) Resolve(ctx context.Context, version string, arch config.Arch, pinnedSHA string) (Release, error) {
	if !slices.Contains(config.Arches(), arch) {
		return Release{}, errs.Usage("--arch %q: not a runner architecture (allowed: x64, arm64, s390x, ppc64le, arm)", arch)
	}
	if !IsLatest(version) {
		if err := ValidateVersion(version); err != nil {
			return Release{}, err
		}
	}
	if pinnedSHA != "" {
		if err := ValidateSHA256(pinnedSHA); err != nil {
			return Release{}, err
		}
	}
	repo, err := r.repo()
	if err != nil {
		return Release{}, err
	}
	if err := r.checkDownloadBase(); err != nil {
		return Release{}, err
	}

	if !IsLatest(version) && pinnedSHA != "" {
		rel := Release{Repo: repo, Version: version, Arch: arch, SHA256: strings.ToLower(pinnedSHA),
			URL: r.tarballURL(repo, arch, version, "")}
		r.logger().Info("runner release pinned; nothing fetched", "repo", repo, "version", version, "arch", string(arch))
		return rel, nil
	}

	var path string
	if IsLatest(version) {
		path = "/repos/" + repo + "/releases/latest"
	} else {
		path = "/repos/" + repo + "/releases/tags/v" + version
	}
	body, err := r.get(ctx, path, repo, version)
	if err != nil {
		return Release{}, err
	}
	gr, err := parseRelease(body)
	if err != nil {
		return Release{}, errs.Wrap(errs.KindUnreachable, err, "release %s of %s: unexpected answer from %s", displayVersion(version), repo, r.apiURL())
	}
	if !IsLatest(version) && gr.Version != version {
		return Release{}, errs.New(errs.KindUnreachable, "asked %s for release v%s of %s, got %s", r.apiURL(), version, repo, gr.Tag)
	}

	name := TarballName(arch, gr.Version)
	asset, hasAsset := gr.asset(name)
	if !hasAsset && r.DownloadBase == "" {
		return Release{}, errs.New(errs.KindNotFound, "release v%s of %s has no asset %s: it publishes no runner for arch %s (choose another --arch or release repository)", gr.Version, repo, name, arch)
	}
	rel := Release{Repo: repo, Version: gr.Version, Arch: arch, URL: r.tarballURL(repo, arch, gr.Version, asset.URL)}

	source := "pinned"
	switch {
	case pinnedSHA != "":
		rel.SHA256 = strings.ToLower(pinnedSHA)
	default:
		notesSHA, notesErr := SHAFromNotes(gr.Body, arch)
		digestSHA, digestErr := shaFromDigest(asset.Digest)
		switch {
		case notesErr == nil:
			rel.SHA256, source = notesSHA, "release notes"
			if digestErr == nil && digestSHA != notesSHA {
				r.logger().Warn("release notes and asset digest disagree; using the notes (the guest checks the tarball)",
					"repo", repo, "version", gr.Version, "asset", name, "notes_sha256", notesSHA, "digest_sha256", digestSHA)
			}
		case digestErr == nil:
			rel.SHA256, source = digestSHA, "asset digest"
		default:
			return Release{}, errs.New(errs.KindNotFound,
				"release v%s of %s publishes no SHA-256 for linux-%s (%v; asset %s: %v): pin the checksum with --runner-sha256",
				gr.Version, repo, arch.Runner(), notesErr, name, digestErr)
		}
	}
	r.logger().Info("runner release resolved", "repo", repo, "version", rel.Version, "arch", string(arch),
		"url", rel.URL, "sha256", rel.SHA256, "sha256_source", source)
	return rel, nil
}

// LatestVersion returns the version (X.Y.Z) of the newest release, for
// new-release detection.
func (r *Resolver) LatestVersion(ctx context.Context) (string, error) {
	repo, err := r.repo()
	if err != nil {
		return "", err
	}
	body, err := r.get(ctx, "/repos/"+repo+"/releases/latest", repo, "")
	if err != nil {
		return "", err
	}
	gr, err := parseRelease(body)
	if err != nil {
		return "", errs.Wrap(errs.KindUnreachable, err, "latest release of %s: unexpected answer from %s", repo, r.apiURL())
	}
	return gr.Version, nil
}

func displayVersion(v string) string {
	if IsLatest(v) {
		return "latest"
	}
	return "v" + v
}

func (r *Resolver) repo() (string, error) {
	repo := r.Repo
	if repo == "" {
		repo = DefaultRepo
	}
	if !repoRE.MatchString(repo) || strings.Contains(repo, "..") {
		return "", errs.Usage("runner release repository %q: use owner/name, e.g. %s", repo, DefaultRepo)
	}
	return repo, nil
}

// checkDownloadBase refuses a mirror URL that is not http(s) or that holds
// credentials: the tarball URL ends up in user-data, which stays in the image.
func (r *Resolver) checkDownloadBase() error {
	if r.DownloadBase == "" {
		return nil
	}
	u, err := url.Parse(r.DownloadBase)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" {
		return errs.Usage("runner download mirror %q: use an http(s) URL without credentials or query (it is written into the image)", redact(r.DownloadBase))
	}
	return nil
}

func redact(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	return "<unparsable URL>"
}

func (r *Resolver) apiURL() string {
	if r.APIURL == "" {
		return DefaultAPIURL
	}
	return strings.TrimRight(r.APIURL, "/")
}

func (r *Resolver) logger() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log
}

func (r *Resolver) client() *http.Client {
	if r.HTTP == nil {
		return &http.Client{Timeout: DefaultTimeout}
	}
	return r.HTTP
}

// tarballURL is the mirror URL when DownloadBase is set, else the asset's
// own URL, else GitHub's conventional download URL.
func (r *Resolver) tarballURL(repo string, a config.Arch, version, assetURL string) string {
	name := TarballName(a, version)
	switch {
	case r.DownloadBase != "":
		return strings.TrimRight(r.DownloadBase, "/") + "/v" + version + "/" + name
	case assetURL != "":
		return assetURL
	default:
		return "https://github.com/" + repo + "/releases/download/v" + version + "/" + name
	}
}

// get fetches one API document and classifies every failure.
func (r *Resolver) get(ctx context.Context, path, repo, version string) ([]byte, error) {
	base := r.apiURL()
	u, err := url.Parse(base + path)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, errs.Usage("GitHub API URL %q: use an http(s) URL without credentials, such as %s (the token goes in its own setting)", redact(base), DefaultAPIURL)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("building request for %s: %w", u.Redacted(), err)
	}
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	req.Header.Set("User-Agent", "github-runner-image-builder")
	if r.Token != "" {
		req.Header.Set("Authorization", "Bearer "+r.Token)
	}
	what := fmt.Sprintf("release %s of %s", displayVersion(version), repo)

	resp, err := r.client().Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("looking up %s: %w", what, ctx.Err())
		}
		return nil, errs.Wrap(errs.KindUnreachable, err, "looking up %s at %s", what, base)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("reading %s: %w", what, ctx.Err())
		}
		return nil, errs.Wrap(errs.KindUnreachable, err, "reading %s from %s", what, base)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusNotFound:
		if IsLatest(version) {
			return nil, errs.New(errs.KindNotFound, "%s has no published release (check the release repository)", repo)
		}
		return nil, errs.New(errs.KindNotFound, "%s not found (check --runner-version)", what)
	case resp.StatusCode == http.StatusUnauthorized:
		return nil, errs.New(errs.KindAuth, "looking up %s: %s refused the token (401): check the GitHub token", what, base)
	case resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusTooManyRequests:
		hint := "check the GitHub token's access to " + repo
		if resp.Header.Get("X-RateLimit-Remaining") == "0" || resp.StatusCode == http.StatusTooManyRequests {
			hint = "API rate limit reached: set a GitHub token, or pin --runner-version and --runner-sha256"
		}
		return nil, errs.New(errs.KindAuth, "looking up %s: %s answered %d: %s", what, base, resp.StatusCode, hint)
	default:
		return nil, errs.New(errs.KindUnreachable, "looking up %s: %s answered %s", what, base, resp.Status)
	}
	if len(body) > maxBody {
		return nil, errs.New(errs.KindUnreachable, "looking up %s: answer from %s is larger than %d bytes", what, base, maxBody)
	}
	return body, nil
}
