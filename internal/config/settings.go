package config

import (
	"fmt"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// Setting names one build setting that both front ends read: `run`'s
// flags and the builder host's YAML file. Its value is the YAML key path;
// Flag is its command-line spelling. The rules below are the only checks of
// these settings: each returns a *SettingError (a usage error) that the
// front end renders in its own spelling, so the same bad value is refused
// with the same limits from a flag and from the file.
//
// Adding a setting: a RunSpec field, a Setting here (key and flag), its
// rule called from RunSpec.Validate, a flag in internal/cli/run.go and a
// key in internal/service/config.go.
type Setting string

// The shared build settings.
const (
	SettingPrefix          Setting = "prefix"
	SettingKeepRevisions   Setting = "keep_revisions"
	SettingVisibility      Setting = "visibility"
	SettingUploadClouds    Setting = "upload_clouds"
	SettingRunnerVersion   Setting = "runner.version"
	SettingRunnerSHA256    Setting = "runner.sha256"
	SettingRunnerRepo      Setting = "runner.repo"
	SettingRunnerAPIURL    Setting = "runner.api_url"
	SettingProxy           Setting = "proxy"
	SettingScriptURL       Setting = "script.url"
	SettingBaseImageURL    Setting = "base_image_url"
	SettingTimeoutBoot     Setting = "timeouts.boot"
	SettingTimeoutSSH      Setting = "timeouts.ssh"
	SettingTimeoutCloudIn  Setting = "timeouts.cloud_init"
	SettingTimeoutScript   Setting = "timeouts.script"
	SettingTimeoutSnapshot Setting = "timeouts.snapshot"
	SettingTimeoutCopy     Setting = "timeouts.copy"
)

// Key is the setting's YAML key path (e.g. "runner.version").
func (s Setting) Key() string { return string(s) }

// Flag is the setting's command-line flag (e.g. "--runner-version").
func (s Setting) Flag() string {
	switch s {
	case SettingTimeoutBoot:
		return "--boot-timeout"
	case SettingTimeoutSSH:
		return "--ssh-timeout"
	case SettingTimeoutCloudIn:
		return "--cloud-init-timeout"
	case SettingTimeoutScript:
		return "--script-timeout"
	case SettingTimeoutSnapshot:
		return "--snapshot-timeout"
	case SettingTimeoutCopy:
		return "--copy-timeout"
	}
	flag := []byte("--" + string(s))
	for i, c := range flag {
		if c == '_' || c == '.' {
			flag[i] = '-'
		}
	}
	return string(flag)
}

// SettingError is a setting's bad value. Error spells it as the flag
// (`--keep-revisions 0: keep from 1 to 99 ...`); the YAML loader spells it
// as the key with the file and line (KeyMessage).
type SettingError struct {
	Setting Setting
	Value   string // the bad value as shown to the user (quoted or not), or ""
	Msg     string // what is allowed
}

func (e *SettingError) Error() string { return e.spelled(e.Setting.Flag(), " ") }

// KeyMessage is the error after the YAML key: "VALUE: MSG", or MSG.
func (e *SettingError) KeyMessage() string { return e.spelled("", "") }

func (e *SettingError) spelled(name, sep string) string {
	switch {
	case e.Value == "" && name == "":
		return e.Msg
	case e.Value == "":
		return name + ": " + e.Msg
	}
	return name + sep + e.Value + ": " + e.Msg
}

// badSetting is a usage error carrying a *SettingError.
func badSetting(s Setting, value, format string, args ...any) error {
	return errs.Wrap(errs.KindUsage, &SettingError{Setting: s, Value: value, Msg: fmt.Sprintf(format, args...)}, "")
}

// MaxKeepRevisions is the most revisions pruning keeps per image name.
const MaxKeepRevisions = 99

// CheckKeepRevisions: keep 1 to MaxKeepRevisions revisions, the new one included.
func CheckKeepRevisions(n int) error {
	if n < 1 || n > MaxKeepRevisions {
		return badSetting(SettingKeepRevisions, fmt.Sprint(n), "keep from 1 to %d revisions (the image just built counts as one)", MaxKeepRevisions)
	}
	return nil
}

// CheckRunnerPin: a runner SHA-256 pins one version's tarball, so it needs
// a runner version.
func CheckRunnerPin(version, sha256 string) error {
	if sha256 != "" && version == "" {
		return badSetting(SettingRunnerSHA256, "", "pins one version's tarball: set the runner version too")
	}
	return nil
}

// maxStepTimeout bounds every step deadline.
const maxStepTimeout = 24 * time.Hour

// Validate checks every step deadline: above 0 and at most 24h.
func (t Timeouts) Validate() error {
	for _, d := range []struct {
		s Setting
		v time.Duration
	}{
		{SettingTimeoutBoot, t.Boot}, {SettingTimeoutSSH, t.SSH}, {SettingTimeoutCloudIn, t.CloudInit},
		{SettingTimeoutScript, t.Script}, {SettingTimeoutSnapshot, t.Snapshot}, {SettingTimeoutCopy, t.Copy},
	} {
		if d.v <= 0 || d.v > maxStepTimeout {
			return badSetting(d.s, d.v.String(), "use a duration above 0 and at most 24h, e.g. 30m or 1h30m")
		}
	}
	return nil
}
