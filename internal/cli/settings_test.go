package cli

import (
	"fmt"
	"strings"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/service"
)

// settingsYAML is a valid builder host configuration of three lines and
// a prefix (line 4); a case's key is written on line 5 (a nested key's
// leaf on line 6), or replaces the prefix.
const settingsYAML = "cloud: build\nmatrix:\n  arches: [x64]\n"

// Each shared rule gets the same verdict from `run`'s flags and from the
// builder host's YAML file: a good value passes both, a bad one is refused
// by both as a usage error with the same words after the name, which is
// the flag on the command line and the key with file and line in the YAML.
func TestSettingsSameVerdictFromFlagsAndYAML(t *testing.T) {
	sha := strings.Repeat("ab", 32)
	tests := []struct {
		setting config.Setting
		flag    string // the value on the command line
		yaml    string // the value in the file ("" = flag)
		extra   string // further YAML lines the value needs (after the key)
		good    bool
	}{
		{setting: config.SettingKeepRevisions, flag: "1", good: true},
		{setting: config.SettingKeepRevisions, flag: "99", good: true},
		{setting: config.SettingKeepRevisions, flag: "0"},
		{setting: config.SettingKeepRevisions, flag: "100"},
		{setting: config.SettingKeepRevisions, flag: "-1"},
		{setting: config.SettingVisibility, flag: "community", good: true},
		{setting: config.SettingVisibility, flag: "secret"},
		{setting: config.SettingPrefix, flag: "grib-2", good: true},
		{setting: config.SettingPrefix, flag: "-x"},
		{setting: config.SettingUploadClouds, flag: "a,b", yaml: "[a, b]", good: true},
		{setting: config.SettingUploadClouds, flag: "a,a", yaml: "[a, a]"},
		{setting: config.SettingRunnerVersion, flag: "2.330.0", good: true},
		{setting: config.SettingRunnerVersion, flag: "v2.330.0"},
		{setting: config.SettingRunnerVersion, flag: "2.330"},
		{setting: config.SettingRunnerSHA256, flag: sha, extra: "  version: 2.330.0\n", good: true},
		{setting: config.SettingRunnerSHA256, flag: "abc", extra: "  version: 2.330.0\n"},
		{setting: config.SettingRunnerRepo, flag: "actions/runner", good: true},
		{setting: config.SettingRunnerRepo, flag: "no-slash"},
		{setting: config.SettingRunnerAPIURL, flag: "https://ghe.example.com/api/v3", good: true},
		{setting: config.SettingRunnerAPIURL, flag: "ftp://ghe.example.com"},
		{setting: config.SettingRunnerAPIURL, flag: "https://user:pw@ghe.example.com"},
		{setting: config.SettingProxy, flag: "squid.internal:3128", good: true},
		{setting: config.SettingProxy, flag: "http://squid.internal:3128"},
		{setting: config.SettingProxy, flag: "squid.internal"},
		{setting: config.SettingScriptURL, flag: "http://127.0.0.1:1/setup.sh", good: true},
		{setting: config.SettingScriptURL, flag: "file:///setup.sh"},
		{setting: config.SettingTimeoutBoot, flag: "30m", good: true},
		{setting: config.SettingTimeoutBoot, flag: "0s"},
		{setting: config.SettingTimeoutBoot, flag: "25h"},
		{setting: config.SettingTimeoutCopy, flag: "24h", good: true},
		{setting: config.SettingTimeoutCopy, flag: "24h1s"},
	}
	for _, tt := range tests {
		name := fmt.Sprintf("%s=%s", tt.setting, tt.flag)
		t.Run(name, func(t *testing.T) {
			flag, key := tt.setting.Flag(), tt.setting.Key()

			// The command line: a dry run of `run`, pinned so nothing is fetched.
			args := append(pinned("--os-cloud", "build", "run", "img", "--arch", "x64", "--dry-run"), flag, tt.flag)
			r := runApp(t, testEnv(), Backend{}, args...)
			flagRest, flagRefused := "", r.code == errs.KindUsage.ExitCode()
			if flagRefused {
				line := strings.TrimSpace(r.stderr)
				if strings.Count(line, "\n") != 0 || !strings.HasPrefix(line, "Error: "+flag) {
					t.Fatalf("flag path: stderr %q, want one line starting Error: %s", r.stderr, flag)
				}
				flagRest = strings.TrimLeft(strings.TrimPrefix(line, "Error: "+flag), ": ")
			} else if r.code != 0 {
				t.Fatalf("flag path: exit %d, want 0 or a usage error: %s", r.code, r.stderr)
			}

			// The YAML file: the key (nested under its parent) on line 5 or 6.
			value := tt.yaml
			if value == "" {
				value = tt.flag
			}
			doc, line := settingsYAML+"prefix: grib\n", 5
			if tt.setting == config.SettingPrefix {
				doc, line = settingsYAML, 4
			}
			if parent, leaf, nested := strings.Cut(key, "."); nested {
				doc += parent + ":\n  " + leaf + ": " + value + "\n" + tt.extra
				line = 6
				key = parent + "." + leaf
			} else {
				doc += key + ": " + value + "\n"
			}
			_, err := service.ParseConfig("c.yaml", []byte(doc))
			yamlRefused := err != nil
			if yamlRefused {
				prefix := fmt.Sprintf("c.yaml:%d: %s", line, key)
				if !errs.Is(err, errs.KindUsage) || !strings.HasPrefix(err.Error(), prefix) {
					t.Fatalf("YAML path: %v, want a usage error starting %s\n%s", err, prefix, doc)
				}
				yamlRest := strings.TrimLeft(strings.TrimPrefix(err.Error(), prefix), ": ")
				if flagRefused && yamlRest != flagRest {
					t.Errorf("the paths explain differently:\n flag: %s\n YAML: %s", flagRest, yamlRest)
				}
			}

			if flagRefused != !tt.good || yamlRefused != !tt.good {
				t.Errorf("verdicts: flag refused %v (%s), YAML refused %v (%v); want refused %v",
					flagRefused, strings.TrimSpace(r.stderr), yamlRefused, err, !tt.good)
			}
		})
	}
}
