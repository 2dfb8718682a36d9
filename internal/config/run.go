package config

import (
	"fmt"
	"maps"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// This file turns what a user typed for `run` (flags, argument, environment)
// into a validated RunSpec, the one value both builders consume. Every
// failure is an errs.KindUsage error of one line that names the flag and
// says what is allowed; nothing here touches a cloud or the network.

// Defaults of `run` (the first two are the Python tool's).
const (
	DefaultKeepRevisions = 5
	DefaultBase          = BaseNoble
	DefaultRunnerRepo    = "canonical/github-actions-runner"
	DefaultRunnerAPIURL  = "https://api.github.com"
	// SecretEnvPrefix marks the environment variables passed to --script-url's
	// script; the prefix is removed from each name.
	SecretEnvPrefix = "IMAGE_BUILDER_SECRET_"
	// TokenEnv holds the GitHub token for release look-ups (never a flag: argv is visible).
	TokenEnv = "GITHUB_TOKEN"
)

// BuilderKind says where the image is built.
type BuilderKind string

// The builders.
const (
	BuilderOpenStack BuilderKind = "openstack" // a builder server on the cloud, snapshotted (default)
	BuilderLocal     BuilderKind = "local"     // qemu on this host, written to --output
)

// ParseBuilder accepts "openstack" or "local" (case-insensitive).
func ParseBuilder(s string) (BuilderKind, error) {
	switch b := BuilderKind(strings.ToLower(strings.TrimSpace(s))); b {
	case BuilderOpenStack, BuilderLocal:
		return b, nil
	}
	return "", settingErr("builder", fmt.Sprintf("%q", s), "use openstack or local")
}

// Visibility is the Glance visibility of published images.
type Visibility string

// The Glance visibilities.
const (
	VisibilityPrivate   Visibility = "private"
	VisibilityShared    Visibility = "shared"
	VisibilityCommunity Visibility = "community"
	VisibilityPublic    Visibility = "public"
)

// ParseVisibility accepts a Glance visibility (case-insensitive).
func ParseVisibility(s string) (Visibility, error) {
	switch v := Visibility(strings.ToLower(strings.TrimSpace(s))); v {
	case VisibilityPrivate, VisibilityShared, VisibilityCommunity, VisibilityPublic:
		return v, nil
	}
	return "", settingErr("visibility", fmt.Sprintf("%q", s), "use private, shared, community or public")
}

// Secret is a value that must never be printed: String, GoString, LogValue
// and MarshalJSON all redact it. Reveal returns the value.
type Secret string

const redacted = "[redacted]"

// Reveal returns the secret value; call it only where the value is used.
func (s Secret) Reveal() string { return string(s) }

func (s Secret) String() string   { return redacted }
func (s Secret) GoString() string { return redacted }

// MarshalJSON writes the redaction marker, never the value.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// Timeouts are the per-phase deadlines of a build.
type Timeouts struct {
	Boot      time.Duration // server ACTIVE (or local guest started)
	SSH       time.Duration // first SSH connection with a checked host key
	CloudInit time.Duration // cloud-init finished
	Script    time.Duration // the --script-url script
	Snapshot  time.Duration // snapshot (or local flatten) finished and active
	Copy      time.Duration // copy to every --upload-clouds cloud
}

// DefaultTimeouts are the Python tool's limits where it had any (inventory
// §1.9), and bounds where it waited forever (SSH).
func DefaultTimeouts() Timeouts {
	return Timeouts{
		Boot:      20 * time.Minute,
		SSH:       10 * time.Minute,
		CloudInit: 30 * time.Minute,
		Script:    60 * time.Minute,
		Snapshot:  30 * time.Minute,
		Copy:      60 * time.Minute,
	}
}

// RunSpec is a validated `run`: what to build, where, and how to publish it.
type RunSpec struct {
	ImageName string // the output image's name in every cloud
	Cloud     string // --os-cloud, the build cloud ("" only for the local builder or a dry run)
	Arch      Arch
	Base      Base
	Prefix    string // resource-name prefix (config.BaseImageName etc.)

	KeepRevisions int
	UploadClouds  []string // in the order given; IDs are reported in this order
	// DiskFormat is the Glance disk format of the copies (qcow2 or raw):
	// an image of another format is converted with qemu-img on this host.
	// "" keeps the built image's format. The build cloud's image is the
	// snapshot as Nova made it.
	DiskFormat DiskFormat
	// UploadDiskFormats overrides DiskFormat per upload cloud (the
	// service's upload_clouds: [{name, disk_format}]).
	UploadDiskFormats map[string]DiskFormat
	// ScratchDir is where the download and converted copies are written
	// ("" is $TMPDIR).
	ScratchDir    string
	Visibility    Visibility
	AdoptUnmarked bool // prune also the Python tool's unmarked images of this name
	// Protect lists image IDs that pruning must never delete, whatever
	// KeepRevisions says: the builder host passes the images it last handed
	// to its consumers (their callback succeeded), so a consumer's image is
	// never pruned under it. Empty for `run`.
	Protect []string

	RunnerVersion string // X.Y.Z, or "" for the latest release
	RunnerSHA256  string // 64 lowercase hex digits, or "" to read it from the release
	RunnerRepo    string // owner/name
	RunnerAPIURL  string // the GitHub REST API
	GitHubToken   Secret // from GITHUB_TOKEN, may be empty

	Flavor  string // name or ID; "" picks the smallest that fits
	Network string // name or ID; "" picks one
	Proxy   string // host:port, or "": the guest's proxy
	// HostProxy is this host's own proxy (every HTTP client of the build);
	// zero: the environment's.
	HostProxy HostProxy
	ScriptURL string // http(s) URL of the user's script, or ""
	Secrets   map[string]Secret

	UserDataFile     string // replaces the built-in recipe when set
	VerifyScriptFile string // an extra check run in the guest before publishing
	// SkipDefaultChecks drops the built-in recipe's checks (runner, docker,
	// gh, yq, runner user) so that only VerifyScriptFile verifies the image;
	// allowed only with UserDataFile (whose recipe may install none of them)
	// and VerifyScriptFile.
	SkipDefaultChecks bool

	Timeouts                 Timeouts
	InsecureSkipHostKeyCheck bool
	// KeepOnFailure leaves the builder (server or local VM) running after a
	// failed build, for debugging (`run --keep-on-failure`). An interrupted
	// build still removes it; the service never sets it.
	KeepOnFailure bool
	// SSHJump is the jump host the builder's SSH goes through; zero: direct.
	SSHJump SSHJump
	// ZeroFreeSpace zeroes the guest's free space before power-off, for
	// hypervisors whose disks do not pass discards (fstrim runs anyway).
	ZeroFreeSpace bool

	Builder  BuilderKind
	Output   string // qcow2 path (local builder)
	Isolated bool   // local builder: the guest reaches nothing but what the builder forwards
	DryRun   bool

	// Where the local builder takes the base image from: the verified
	// cache (CacheDir, filled by `init --builder local` or on demand from
	// BaseImageURL, default cloud-images.ubuntu.com), or BaseImageFile.
	BaseImageFile   string // a local image file used instead of the cache
	BaseImageSHA256 string // expected digest of that file (or of the mirror's image), or ""
	BaseImageURL    string // mirror of https://cloud-images.ubuntu.com/, or ""
	BaseImageSerial string // dated serial of the mirror's image, "" is current
	CacheDir        string // where verified base images are kept; "" is config.CacheDir's default

	// CloudsPaths is where clouds.yaml is looked up, set by the front end:
	// the openstack CLI's search path, or the service's clouds_file.
	CloudsPaths []string
}

// RunInput is `run` as typed: flag values and the environment, unparsed.
type RunInput struct {
	ImageName, Cloud, Arch, Base, Prefix string
	KeepRevisions                        int
	UploadClouds, Visibility             string
	DiskFormat, ScratchDir               string
	UploadDiskFormats                    []string // CLOUD=FORMAT
	AdoptUnmarked                        bool
	RunnerVersion, RunnerSHA256          string
	RunnerRepo, RunnerAPIURL             string
	Flavor, Network, Proxy, ScriptURL    string
	HostProxy                            HostProxy
	UserDataFile, VerifyScriptFile       string
	SkipDefaultChecks                    bool
	Timeouts                             Timeouts
	InsecureSkipHostKeyCheck             bool
	KeepOnFailure                        bool
	SSHJump                              SSHJump
	ZeroFreeSpace                        bool
	Builder, Output                      string
	Isolated, DryRun                     bool
	BaseImageFile, BaseImageSHA256       string   // local builder only
	BaseImageURL, BaseImageSerial        string   // local builder only
	CacheDir                             string   // local builder only
	Environ                              []string // KEY=VALUE, as os.Environ
	HostArch                             Arch     // the arch of this host ("" if unsupported); for the local builder
}

// NewRunSpec parses and validates in. The first problem found is returned
// as a one-line usage error.
func NewRunSpec(in RunInput) (RunSpec, error) {
	s := RunSpec{
		ImageName: in.ImageName, Cloud: strings.TrimSpace(in.Cloud), Prefix: in.Prefix,
		KeepRevisions: in.KeepRevisions, AdoptUnmarked: in.AdoptUnmarked,
		RunnerVersion: strings.TrimSpace(in.RunnerVersion), RunnerSHA256: strings.ToLower(strings.TrimSpace(in.RunnerSHA256)),
		RunnerRepo: in.RunnerRepo, RunnerAPIURL: in.RunnerAPIURL,
		Flavor: in.Flavor, Network: in.Network, Proxy: in.Proxy, HostProxy: in.HostProxy, ScriptURL: in.ScriptURL,
		UserDataFile: in.UserDataFile, VerifyScriptFile: in.VerifyScriptFile, SkipDefaultChecks: in.SkipDefaultChecks,
		Timeouts: in.Timeouts, InsecureSkipHostKeyCheck: in.InsecureSkipHostKeyCheck, SSHJump: in.SSHJump,
		KeepOnFailure: in.KeepOnFailure, ZeroFreeSpace: in.ZeroFreeSpace,
		Output: in.Output, Isolated: in.Isolated, DryRun: in.DryRun,
		BaseImageFile: in.BaseImageFile, BaseImageSHA256: strings.ToLower(strings.TrimSpace(in.BaseImageSHA256)),
		BaseImageURL: in.BaseImageURL, BaseImageSerial: in.BaseImageSerial, CacheDir: in.CacheDir,
	}
	if s.RunnerVersion == "latest" {
		s.RunnerVersion = ""
	}
	var err error
	if s.Arch, err = ParseArchFlag(in.Arch); err != nil {
		return RunSpec{}, err
	}
	if s.Base, err = parseBaseFlag("--base-image", in.Base); err != nil {
		return RunSpec{}, err
	}
	if s.UploadClouds, err = ParseCloudList("upload_clouds", in.UploadClouds); err != nil {
		return RunSpec{}, err
	}
	if s.Visibility, err = ParseVisibility(in.Visibility); err != nil {
		return RunSpec{}, err
	}
	if s.DiskFormat, err = ParseDiskFormat("disk_format", 0, in.DiskFormat); err != nil {
		return RunSpec{}, err
	}
	if s.UploadDiskFormats, err = ParseUploadDiskFormats(in.UploadDiskFormats); err != nil {
		return RunSpec{}, err
	}
	s.ScratchDir = in.ScratchDir
	if s.Builder, err = ParseBuilder(in.Builder); err != nil {
		return RunSpec{}, err
	}
	if s.Secrets, err = SecretsFromEnv(in.Environ); err != nil {
		return RunSpec{}, err
	}
	s.GitHubToken = Secret(lookupEnv(in.Environ, TokenEnv))
	if err := s.Validate(); err != nil {
		return RunSpec{}, err
	}
	if s.Builder == BuilderLocal && s.Arch.CloudImage() != in.HostArch.CloudImage() {
		host := string(in.HostArch)
		if host == "" {
			host = "an unsupported architecture"
		}
		return RunSpec{}, errs.Usage("--arch %s with --builder local: the local builder builds only this host's architecture (%s); use --builder openstack", s.Arch, host)
	}
	return s, nil
}

// Validate checks every field of s; it is what NewRunSpec ends with and what
// a caller that builds a RunSpec itself (the builder host) must call. These
// are the one set of rules of a build's settings: a refused setting is a
// *SettingError (see Settings for its spellings).
func (s RunSpec) Validate() error {
	if err := ValidateImageName(s.ImageName); err != nil {
		return errs.Wrap(errs.KindUsage, err, "")
	}
	if !slices.Contains(Arches(), s.Arch) {
		return settingErr("arch", fmt.Sprintf("%q", s.Arch), "use x64, arm64, s390x, ppc64le or arm")
	}
	if !slices.Contains(Bases(), s.Base) {
		return settingErr("base", fmt.Sprintf("%q", s.Base), "use focal, jammy, noble or resolute")
	}
	if err := CheckPair(s.Arch, s.Base); err != nil {
		return err
	}
	if err := ValidatePrefix(s.Prefix); err != nil {
		return err
	}
	if s.KeepRevisions < MinKeepRevisions || s.KeepRevisions > MaxKeepRevisions {
		return settingErr("keep_revisions", strconv.Itoa(s.KeepRevisions), "keep from %d to %d revisions (the new image counts as one)", MinKeepRevisions, MaxKeepRevisions)
	}
	if err := ValidateRunnerVersion(s.RunnerVersion); err != nil {
		return err
	}
	if err := ValidateRunnerSHA256(s.RunnerSHA256); err != nil {
		return err
	}
	if err := ValidateRepo(s.RunnerRepo); err != nil {
		return err
	}
	if err := ValidateRunnerAPIURL(s.RunnerAPIURL); err != nil {
		return err
	}
	for _, f := range []struct{ id, v, what string }{{"flavor", s.Flavor, "flavor"}, {"network", s.Network, "network"}} {
		if f.v != strings.TrimSpace(f.v) || strings.ContainsFunc(f.v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return settingErr(f.id, fmt.Sprintf("%q", f.v), "give a %s name or ID without spaces around it, or none to pick one", f.what)
		}
	}
	if err := ValidateProxy(s.Proxy); err != nil {
		return err
	}
	if err := ValidateHostProxy(s.HostProxy); err != nil {
		return err
	}
	if s.ScriptURL != "" {
		if err := ValidateHTTPURL("script_url", s.ScriptURL, false); err != nil {
			return err
		}
	}
	if err := validateCloudList("upload_clouds", s.UploadClouds); err != nil {
		return err
	}
	for name := range s.Secrets {
		if err := validateSecretName(name); err != nil {
			return err
		}
	}
	for _, f := range []struct {
		id   string
		path string
	}{{"user_data", s.UserDataFile}, {"verify_script", s.VerifyScriptFile}} {
		if f.path != "" && strings.TrimSpace(f.path) == "" {
			return settingErr(f.id, fmt.Sprintf("%q", f.path), "give a file path")
		}
	}
	if s.SkipDefaultChecks && (s.UserDataFile == "" || s.VerifyScriptFile == "") {
		return settingErr("skip_default_checks", "", "needs {user_data} (the built-in recipe is always verified) and {verify_script} (an image is never published unverified)")
	}
	if err := s.Timeouts.Validate(); err != nil {
		return err
	}
	if err := ValidateSSHJump(s.SSHJump); err != nil {
		return err
	}
	if _, err := ParseVisibility(string(s.Visibility)); err != nil {
		return err
	}
	if err := s.validateDiskFormats(); err != nil {
		return err
	}
	if s.ScratchDir != "" && (!filepath.IsAbs(s.ScratchDir) || strings.ContainsFunc(s.ScratchDir, isControl)) {
		return settingErr("scratch_dir", fmt.Sprintf("%q", s.ScratchDir), "give an absolute directory, or none for $TMPDIR")
	}
	switch s.Builder {
	case BuilderOpenStack:
		if s.Output != "" {
			return settingErr("output", "", "applies only to {builder} local (the openstack builder publishes a snapshot)")
		}
		if s.Isolated {
			return settingErr("isolated", "", "applies only to {builder} local")
		}
		for _, f := range []struct{ id, v string }{
			{"base_image_file", s.BaseImageFile}, {"base_image_sha256", s.BaseImageSHA256},
			{"base_image_url", s.BaseImageURL}, {"base_image_serial", s.BaseImageSerial},
		} {
			if f.v != "" {
				return settingErr(f.id, "", "applies only to {builder} local (the openstack builder boots the base image `init` uploaded)")
			}
		}
		if s.Cloud == "" && !s.DryRun {
			return settingErr("cloud", "", "required with {builder} openstack: name the clouds.yaml cloud to build in")
		}
	case BuilderLocal:
		if strings.TrimSpace(s.Output) == "" && !s.DryRun {
			return settingErr("output", "", "required with {builder} local: the path of the qcow2 image to write")
		}
		if len(s.UploadClouds) > 0 && s.Cloud == "" && !s.DryRun {
			return settingErr("cloud", "", "required with {upload_clouds}: it names the cloud whose clouds.yaml entry is read first")
		}
		if err := s.validateLocalBase(); err != nil {
			return err
		}
	default:
		return settingErr("builder", fmt.Sprintf("%q", s.Builder), "use openstack or local")
	}
	return nil
}

// validateLocalBase checks where the local builder's base image comes from.
func (s RunSpec) validateLocalBase() error {
	if s.BaseImageFile != "" {
		if strings.TrimSpace(s.BaseImageFile) == "" {
			return settingErr("base_image_file", fmt.Sprintf("%q", s.BaseImageFile), "give a file path")
		}
		if s.BaseImageURL != "" || s.BaseImageSerial != "" {
			return settingErr("base_image_file", "", "replaces the download: drop {base_image_url} and {base_image_serial}")
		}
	}
	if s.BaseImageURL != "" {
		if err := ValidateHTTPURL("base_image_url", s.BaseImageURL, true); err != nil {
			return err
		}
	}
	if s.BaseImageSerial != "" && !serialRE.MatchString(s.BaseImageSerial) {
		return settingErr("base_image_serial", fmt.Sprintf("%q", s.BaseImageSerial), "use current or a dated serial such as 20251113")
	}
	if s.BaseImageSHA256 != "" && !sha256RE.MatchString(s.BaseImageSHA256) {
		return settingErr("base_image_sha256", "", "use 64 lowercase hex digits")
	}
	return nil
}

// DiskFormat is a Glance disk format the builder converts copies to.
type DiskFormat string

// The disk formats of --disk-format.
const (
	DiskFormatQCOW2 DiskFormat = "qcow2"
	DiskFormatRaw   DiskFormat = "raw"
)

// ParseDiskFormat accepts "" (the built image's), qcow2 or raw, any case;
// a refusal names setting id (item i when > 0).
func ParseDiskFormat(id string, i int, s string) (DiskFormat, error) {
	switch f := DiskFormat(strings.ToLower(strings.TrimSpace(s))); f {
	case "", DiskFormatQCOW2, DiskFormatRaw:
		return f, nil
	}
	msg := "use qcow2 or raw, or none for the built image's format"
	if i > 0 {
		return "", errs.Wrap(errs.KindUsage, &SettingError{Setting: id, Item: i, Value: fmt.Sprintf("%q", s), Msg: msg}, "")
	}
	return "", settingErr(id, fmt.Sprintf("%q", s), "%s", msg)
}

// ParseUploadDiskFormats parses --upload-disk-format CLOUD=FORMAT values.
func ParseUploadDiskFormats(items []string) (map[string]DiskFormat, error) {
	if len(items) == 0 {
		return nil, nil
	}
	out := map[string]DiskFormat{}
	for _, it := range items {
		cloud, format, ok := strings.Cut(it, "=")
		if !ok || cloud == "" {
			return nil, settingErr("upload_disk_formats", fmt.Sprintf("%q", it), "give CLOUD=FORMAT, e.g. cloud-a=raw")
		}
		f, err := ParseDiskFormat("upload_disk_formats", 0, format)
		if err != nil {
			return nil, err
		}
		if _, dup := out[cloud]; dup {
			return nil, settingErr("upload_disk_formats", fmt.Sprintf("%q", it), "cloud %q is given twice", cloud)
		}
		out[cloud] = f
	}
	return out, nil
}

// validateDiskFormats checks DiskFormat and UploadDiskFormats: formats
// qcow2 or raw, per-cloud ones only for upload clouds, and none for the
// openstack builder's build cloud (its image is Nova's snapshot).
func (s RunSpec) validateDiskFormats() error {
	if _, err := ParseDiskFormat("disk_format", 0, string(s.DiskFormat)); err != nil {
		return err
	}
	for _, cloud := range slices.Sorted(maps.Keys(s.UploadDiskFormats)) {
		i := slices.Index(s.UploadClouds, cloud)
		f := s.UploadDiskFormats[cloud]
		switch {
		case i < 0:
			return settingErr("upload_disk_formats", fmt.Sprintf("%q", cloud), "is not one of {upload_clouds}")
		case f != DiskFormatQCOW2 && f != DiskFormatRaw && f != "":
			return errs.Wrap(errs.KindUsage, &SettingError{Setting: "upload_disk_formats", Item: i + 1,
				Value: fmt.Sprintf("%q", f), Msg: "use qcow2 or raw, or none for the built image's format"}, "")
		case f != "" && s.Builder == BuilderOpenStack && cloud == s.Cloud:
			return errs.Wrap(errs.KindUsage, &SettingError{Setting: "upload_disk_formats", Item: i + 1,
				Value: fmt.Sprintf("%q", cloud), Msg: "is the build cloud, whose image is the snapshot as Nova made it: give the format to the other clouds"}, "")
		}
	}
	return nil
}

// CopyDiskFormat is the disk format of the copy to cloud: its own, else
// DiskFormat; "" keeps the built image's.
func (s RunSpec) CopyDiskFormat(cloud string) DiskFormat {
	if f := s.UploadDiskFormats[cloud]; f != "" {
		return f
	}
	return s.DiskFormat
}

// PublishClouds are the clouds that receive the image, in output order: the
// --upload-clouds list, or the build cloud when it is empty (the Python
// tool's contract; a local build without --upload-clouds publishes nothing).
func (s RunSpec) PublishClouds() []string {
	if len(s.UploadClouds) > 0 {
		return slices.Clone(s.UploadClouds)
	}
	if s.Builder == BuilderLocal {
		return nil
	}
	return []string{s.Cloud}
}

// SecretNames returns the names of the script's secrets, sorted.
func (s RunSpec) SecretNames() []string {
	names := make([]string, 0, len(s.Secrets))
	for n := range s.Secrets {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Validate checks that every deadline is positive and at most a day.
func (t Timeouts) Validate() error {
	for _, d := range []struct {
		id string
		v  time.Duration
	}{
		{"boot_timeout", t.Boot}, {"ssh_timeout", t.SSH}, {"cloud_init_timeout", t.CloudInit},
		{"script_timeout", t.Script}, {"snapshot_timeout", t.Snapshot}, {"copy_timeout", t.Copy},
	} {
		if d.v <= 0 || d.v > 24*time.Hour {
			return settingErr(d.id, d.v.String(), "use a duration above 0 and at most 24h, e.g. 30m or 1h30m")
		}
	}
	return nil
}

// ParseArchFlag parses --arch as a usage error naming the flag ("" is refused: it is required).
func ParseArchFlag(s string) (Arch, error) {
	if strings.TrimSpace(s) == "" {
		return "", errs.Usage("--arch is required: use x64|amd64|x86_64, arm64|aarch64, s390x, ppc64le|ppc64el or arm|armhf")
	}
	a, err := ParseArch(s)
	if err != nil {
		return "", errs.Wrap(errs.KindUsage, err, "--arch")
	}
	return a, nil
}

func parseBaseFlag(flag, s string) (Base, error) {
	b, err := ParseBase(s)
	if err != nil {
		return "", errs.Wrap(errs.KindUsage, err, "%s", flag)
	}
	return b, nil
}

// ParseBaseList parses a repeatable, comma-separated --base-image value of
// `init`; an empty list means every base. Duplicates are refused.
func ParseBaseList(flag string, values []string) ([]Base, error) {
	var out []Base
	for _, v := range values {
		for item := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(item) == "" {
				return nil, errs.Usage("%s %q: empty item; list bases separated by commas, e.g. jammy,noble", flag, v)
			}
			b, err := parseBaseFlag(flag, item)
			if err != nil {
				return nil, err
			}
			if slices.Contains(out, b) {
				return nil, errs.Usage("%s: %s is listed twice", flag, b)
			}
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		return Bases(), nil
	}
	return out, nil
}

// ParseCloudList parses a comma-separated list of clouds.yaml names for the
// setting id: items are trimmed; empty items and duplicates are refused; ""
// is the empty list.
func ParseCloudList(id, s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		out = append(out, strings.TrimSpace(item))
	}
	if err := validateCloudList(id, out); err != nil {
		return nil, err
	}
	return out, nil
}

func validateCloudList(id string, clouds []string) error {
	for i, c := range clouds {
		switch {
		case c == "":
			return itemErr(id, i+1, "item %d is empty: give a clouds.yaml cloud name", i+1)
		case strings.TrimSpace(c) != c || strings.ContainsFunc(c, isControl):
			return itemErr(id, i+1, "cloud name %q has surrounding space or a control character", c)
		case slices.Contains(clouds[:i], c):
			return itemErr(id, i+1, "cloud %q is listed twice", c)
		}
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

var (
	runnerVersionRE = regexp.MustCompile(`^(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})$`)
	sha256RE        = regexp.MustCompile(`^[0-9a-f]{64}$`)
	repoRE          = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}/[A-Za-z0-9_.-]{1,100}$`)
	secretNameRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	proxyHostRE     = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$`)
)

// ValidateRunnerVersion accepts "" (the latest release) or X.Y.Z.
func ValidateRunnerVersion(v string) error {
	if v == "" || runnerVersionRE.MatchString(v) {
		return nil
	}
	hint := ""
	if strings.HasPrefix(v, "v") && runnerVersionRE.MatchString(v[1:]) {
		hint = " (drop the leading v)"
	}
	return settingErr("runner_version", fmt.Sprintf("%q", v), "use X.Y.Z, e.g. 2.330.0%s, or latest", hint)
}

// ValidateRunnerSHA256 accepts "" or 64 lowercase hex digits.
func ValidateRunnerSHA256(s string) error {
	if s == "" || sha256RE.MatchString(s) {
		return nil
	}
	return settingErr("runner_sha256", "", "use the 64 hex digits of the runner tarball's SHA-256 (got %d characters)", len(s))
}

// ValidateRepo accepts a GitHub owner/name.
func ValidateRepo(r string) error {
	if repoRE.MatchString(r) && !strings.Contains(r, "..") {
		return nil
	}
	return settingErr("runner_repo", fmt.Sprintf("%q", r), "use a GitHub owner/name, e.g. %s", DefaultRunnerRepo)
}

// ValidateHTTPURL accepts, for the setting id, an http or https URL with a
// host and without credentials (they would show in logs and process lists).
func ValidateHTTPURL(id, s string, allowEmpty bool) error {
	if s == "" && allowEmpty {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		return settingErr(id, fmt.Sprintf("%q", redactURL(s)), "use an http:// or https:// URL with a host, e.g. https://example.com/setup.sh")
	}
	if u.User != nil {
		return settingErr(id, fmt.Sprintf("%q", redactURL(s)), "remove the credentials from the URL (they would show in logs)")
	}
	return nil
}

// ValidateRunnerAPIURL accepts the GitHub REST API the runner release is
// looked up at: an http(s) URL as ValidateHTTPURL wants, and https unless
// the host is on loopback, since the GitHub token is sent to it (and the
// answer names the tarball and its digest).
func ValidateRunnerAPIURL(s string) error {
	if err := ValidateHTTPURL("runner_api_url", s, false); err != nil {
		return err
	}
	if u, _ := url.Parse(s); u.Scheme == "http" && !IsLoopbackHost(u.Hostname()) {
		return settingErr("runner_api_url", fmt.Sprintf("%q", redactURL(s)),
			"use https:// (the GitHub token is sent to it); http:// is only for loopback (127.0.0.0/8, ::1, localhost)")
	}
	return nil
}

// IsLoopbackHost reports whether host (a URL's Hostname: no port, no
// brackets) is localhost or a loopback IP address.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// RedactedURL is how a URL whose path or query may carry a token (the
// script URL) is shown in logs and plans: its scheme and host only,
// "https://example.com/...".
func RedactedURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Scheme + "://" + u.Host + "/..."
}

// redactURL is a refused URL (or host:port) as its error shows it: without
// its userinfo, whose user is as often a token as its password
// (https://TOKEN@host), and without its query or fragment. It works on the
// text, so that a value no parser accepts loses them too, and it masks up
// to the last "@" anywhere after the scheme: a password may hold "/", "?"
// or "#" (no parser takes it as userinfo then, but it is still a secret),
// so an "@" in a path or query hides the host too, which is the safe way
// to be wrong.
func redactURL(s string) string {
	if strings.ContainsFunc(s, isControl) {
		return "<unprintable>"
	}
	start := 0 // the authority: after "//", or from the start (host:port)
	if i := strings.Index(s, "//"); i >= 0 {
		start = i + 2
	}
	if at := strings.LastIndex(s[start:], "@"); at >= 0 {
		s = s[:start] + "xxxxx@" + s[start+at+1:]
	}
	tail := ""
	if i := strings.IndexAny(s[start:], "?#"); i >= 0 {
		i += start
		s, tail = s[:i], s[i:i+1]+"..."
	}
	return s + tail
}

// ValidateProxy accepts "" or host:port, with a DNS name or IPv4 address
// and a port from 1 to 65535. A scheme is refused with a hint rather than
// stripped: aproxy takes host:port, and a silent rewrite would hide a
// misunderstanding (e.g. an https:// proxy).
func ValidateProxy(s string) error {
	if s == "" {
		return nil
	}
	bad := func(why string) error {
		return settingErr("proxy", fmt.Sprintf("%q", redactURL(s)), "%s; use host:port, e.g. squid.internal:3128", why)
	}
	if i := strings.Index(s, "://"); i >= 0 {
		return bad(fmt.Sprintf("drop the %s:// scheme", s[:i]))
	}
	host, port, err := net.SplitHostPort(s)
	switch {
	case err != nil:
		return bad("not host:port")
	case strings.Contains(host, ":"):
		return bad("IPv6 proxies are not supported (the guest's proxy rules are IPv4)")
	case host+":"+port != s:
		return bad("not host:port (no brackets)")
	case strings.Contains(host, "@"):
		return bad("credentials are not supported")
	case !proxyHostRE.MatchString(host):
		return bad("the host is not a DNS name or IPv4 address")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return bad("the port is not a number from 1 to 65535")
	}
	return nil
}

// SecretsFromEnv collects every IMAGE_BUILDER_SECRET_<NAME>=value of environ
// as NAME → value. A name that is not a shell variable name is refused.
func SecretsFromEnv(environ []string) (map[string]Secret, error) {
	out := map[string]Secret{}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, SecretEnvPrefix) {
			continue
		}
		name := strings.TrimPrefix(k, SecretEnvPrefix)
		if err := validateSecretName(name); err != nil {
			return nil, err
		}
		out[name] = Secret(v)
	}
	return out, nil
}

func validateSecretName(name string) error {
	if secretNameRE.MatchString(name) {
		return nil
	}
	return errs.Usage("environment variable %s%s: the part after %s must be a shell variable name (letters, digits, _)", SecretEnvPrefix, name, SecretEnvPrefix)
}

func lookupEnv(environ []string, key string) string {
	val := ""
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			val = v // the last one wins, as in a shell
		}
	}
	return val
}

// HostArch maps a Go GOARCH (runtime.GOARCH) to the runner arch built
// natively on such a host, or "" when there is none.
func HostArch(goarch string) Arch {
	switch goarch {
	case "amd64":
		return ArchX64
	case "arm64":
		return ArchARM64
	case "s390x":
		return ArchS390X
	case "ppc64le":
		return ArchPPC64LE
	}
	return ""
}

// PublishedImage is one image a build published, as reported on stdout.
type PublishedImage struct {
	Cloud    string `json:"cloud"`
	ID       string `json:"id"`
	Name     string `json:"name"`
	Checksum string `json:"checksum"`
	// ManifestSHA256 is the SHA-256 of the image's manifest file, "" when
	// the build collected none; Manifest is the file.
	ManifestSHA256 string `json:"manifest_sha256,omitempty"`
	Manifest       []byte `json:"-"`
	// DiskFormat is the image's Glance disk format (qcow2, raw).
	DiskFormat string `json:"disk_format,omitempty"`
}
