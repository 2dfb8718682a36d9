package config

import (
	"fmt"
	"strings"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// A build's settings have one set of rules (RunSpec.Validate and the
// parsers it shares with the front ends) and two spellings: `run`'s flags
// and the service configuration's YAML keys. A rule reports a SettingError
// naming the setting by its ID; each front end spells it its own way.
// Adding a setting means one RunSpec field, one rule, one row below, one
// flag line (internal/cli) and one YAML key (internal/service).

// Setting is one setting of a build and its spellings.
type Setting struct {
	ID    string // stable name used by SettingError
	Field string // the RunSpec field it fills
	Flag  string // `run`'s flag
	Key   string // the service configuration's key path, "" when the service has none
}

// Limits of --keep-revisions / keep_revisions.
const (
	MinKeepRevisions = 1
	MaxKeepRevisions = 99
)

// Settings lists every build setting with a rule, in RunSpec order.
func Settings() []Setting {
	return []Setting{
		{"cloud", "Cloud", "--os-cloud", "cloud"},
		{"arch", "Arch", "--arch", "matrix.arches"},
		{"base", "Base", "--base-image", "matrix.bases"},
		{"prefix", "Prefix", "--prefix", "prefix"},
		{"keep_revisions", "KeepRevisions", "--keep-revisions", "keep_revisions"},
		{"upload_clouds", "UploadClouds", "--upload-clouds", "upload_clouds"},
		{"disk_format", "DiskFormat", "--disk-format", "disk_format"},
		{"upload_disk_formats", "UploadDiskFormats", "--upload-disk-format", "upload_clouds.*.disk_format"},
		{"scratch_dir", "ScratchDir", "--scratch-dir", "scratch_dir"},
		{"visibility", "Visibility", "--visibility", "visibility"},
		{"runner_version", "RunnerVersion", "--runner-version", "runner.version"},
		{"runner_sha256", "RunnerSHA256", "--runner-sha256", "runner.sha256"},
		{"runner_repo", "RunnerRepo", "--runner-repo", "runner.repo"},
		{"runner_api_url", "RunnerAPIURL", "--runner-api-url", "runner.api_url"},
		{"flavor", "Flavor", "--flavor", "flavor"},
		{"network", "Network", "--network", "network"},
		{"proxy", "Proxy", "--proxy", "proxy"},
		{"host_http_proxy", "HostProxy.HTTP", "--host-http-proxy", "proxy.host.http"},
		{"host_https_proxy", "HostProxy.HTTPS", "--host-https-proxy", "proxy.host.https"},
		{"host_no_proxy", "HostProxy.NoProxy", "--host-no-proxy", "proxy.host.no_proxy"},
		{"script_url", "ScriptURL", "--script-url", "script.url"},
		{"user_data", "UserDataFile", "--user-data", "user_data_file"},
		{"verify_script", "VerifyScriptFile", "--verify-script", "verify_script_file"},
		{"skip_default_checks", "SkipDefaultChecks", "--skip-default-checks", "skip_default_checks"},
		{"boot_timeout", "Timeouts.Boot", "--boot-timeout", "timeouts.boot"},
		{"ssh_timeout", "Timeouts.SSH", "--ssh-timeout", "timeouts.ssh"},
		{"cloud_init_timeout", "Timeouts.CloudInit", "--cloud-init-timeout", "timeouts.cloud_init"},
		{"script_timeout", "Timeouts.Script", "--script-timeout", "timeouts.script"},
		{"snapshot_timeout", "Timeouts.Snapshot", "--snapshot-timeout", "timeouts.snapshot"},
		{"copy_timeout", "Timeouts.Copy", "--copy-timeout", "timeouts.copy"},
		{"ssh_jump", "SSHJump.Host", "--ssh-jump", "ssh_jump.host"},
		{"ssh_jump_key", "SSHJump.Key", "--ssh-jump-key", "ssh_jump.key"},
		{"ssh_jump_known_hosts", "SSHJump.KnownHosts", "--ssh-jump-known-hosts", "ssh_jump.known_hosts"},
		{"zero_free_space", "ZeroFreeSpace", "--zero-free-space", "zero_free_space"},
		{"builder", "Builder", "--builder", "builder"},
		{"output", "Output", "--output", "local.output_dir"},
		{"isolated", "Isolated", "--isolated", "local.isolated"},
		{"base_image_file", "BaseImageFile", "--base-image-file", ""},
		{"base_image_sha256", "BaseImageSHA256", "--base-image-sha256", ""},
		{"base_image_url", "BaseImageURL", "--base-image-url", "base_image_url"},
		{"base_image_serial", "BaseImageSerial", "--base-image-serial", ""},
	}
}

// FlagOf is the `run` flag of the setting id (id itself if unknown).
func FlagOf(id string) string {
	for _, s := range Settings() {
		if s.ID == id {
			return s.Flag
		}
	}
	return id
}

// KeyOf is the service configuration key of the setting id (id itself if
// unknown or if the service has no such key).
func KeyOf(id string) string {
	for _, s := range Settings() {
		if s.ID == id && s.Key != "" {
			return s.Key
		}
	}
	return id
}

// SettingError is a build setting refused by its rule. Error spells it as
// `run`'s flags do; the service spells it with Detail(KeyOf) after the
// file, line and key.
type SettingError struct {
	Setting string // a Settings ID
	Value   string // the refused value as the message shows it, or "" to show none
	Item    int    // 1-based item of a list setting, 0 for the setting as a whole
	// Msg says what is allowed; "{id}" in it names another setting and is
	// spelled as the setting is.
	Msg string
}

func (e *SettingError) Error() string { return e.Spell(FlagOf) }

// Spell is the one-line message with name spelling every setting:
// "NAME VALUE: MSG", or "NAME: MSG" when no value is shown.
func (e *SettingError) Spell(name func(id string) string) string {
	sep := ": "
	if e.Value != "" {
		sep = " "
	}
	return name(e.Setting) + sep + e.Detail(name)
}

// Detail is the message after the setting's name: "VALUE: MSG" or "MSG",
// with name spelling the settings Msg refers to.
func (e *SettingError) Detail(name func(id string) string) string {
	msg := e.Msg
	if strings.Contains(msg, "{") {
		for _, s := range Settings() {
			msg = strings.ReplaceAll(msg, "{"+s.ID+"}", name(s.ID))
		}
	}
	if e.Value != "" {
		return e.Value + ": " + msg
	}
	return msg
}

// settingErr returns a usage error refusing setting id; value is shown as
// given (format it with %q or %d first), or not at all when "".
func settingErr(id, value, format string, args ...any) error {
	return errs.Wrap(errs.KindUsage, &SettingError{Setting: id, Value: value, Msg: fmt.Sprintf(format, args...)}, "")
}

// itemErr refuses item i (1-based) of the list setting id.
func itemErr(id string, i int, format string, args ...any) error {
	return errs.Wrap(errs.KindUsage, &SettingError{Setting: id, Item: i, Msg: fmt.Sprintf(format, args...)}, "")
}
