package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/release"
	"github.com/runner-image-builder/github-runner-image-builder/internal/service"
	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// settingsYAML is the service configuration every case adds its key to (at line 5).
const settingsYAML = "cloud: builder\nprefix: grib\nmatrix:\n  arches: [x64]\n"

// One value of a build setting, typed as a flag of `run` and as a key of
// the service configuration: both must accept it, or both refuse it with
// the same limits, run naming the flag and the service the key and line.
type settingCase struct {
	name    string
	setting string   // the config.Settings ID the rule refuses
	flags   []string // after `--os-cloud builder run grib-noble-x64 --arch x64` (pinned)
	noCloud bool     // leave --os-cloud out
	yaml    string   // added to settingsYAML
	file    string   // the whole configuration instead (when a base key changes)
	ok      bool
	// For a refused value: the flag and the key (with its line) that name
	// it, and a text both messages contain (the value and what is allowed).
	flag, key string
	line      int
	detail    string
}

func settingCases(scriptURL string, jf jumpSettingFiles) []settingCase {
	bad := func(name, setting string, flags []string, yaml, flag, key string, line int, detail string) settingCase {
		return settingCase{name: name, setting: setting, flags: flags, yaml: yaml, flag: flag, key: key, line: line, detail: detail}
	}
	good := func(name string, flags []string, yaml string) settingCase {
		return settingCase{name: name, flags: flags, yaml: yaml, ok: true}
	}
	keep := "0: keep from 1 to 99 revisions"
	timeout := "use a duration above 0 and at most 24h"
	cases := []settingCase{
		good("keep 1", []string{"--keep-revisions", "1"}, "keep_revisions: 1\n"),
		good("keep 99", []string{"--keep-revisions", "99"}, "keep_revisions: 99\n"),
		bad("keep 0", "keep_revisions", []string{"--keep-revisions", "0"}, "keep_revisions: 0\n", "--keep-revisions", "keep_revisions", 5, keep),
		bad("keep 100", "keep_revisions", []string{"--keep-revisions", "100"}, "keep_revisions: 100\n", "--keep-revisions", "keep_revisions", 5, "100: keep from 1 to 99 revisions"),
		bad("keep -1", "keep_revisions", []string{"--keep-revisions=-1"}, "keep_revisions: -1\n", "--keep-revisions", "keep_revisions", 5, "-1: keep from 1 to 99"),

		good("visibility public", []string{"--visibility", "public"}, "visibility: public\n"),
		good("visibility any case", []string{"--visibility", "Community"}, "visibility: Community\n"),
		bad("visibility", "visibility", []string{"--visibility", "secret"}, "visibility: secret\n", "--visibility", "visibility", 5, `"secret": use private, shared, community or public`),

		good("boot timeout", []string{"--boot-timeout", "30m"}, "timeouts: {boot: 30m}\n"),
		good("copy timeout 24h", []string{"--copy-timeout", "24h"}, "timeouts: {copy: 24h}\n"),
		bad("boot timeout 0", "boot_timeout", []string{"--boot-timeout", "0s"}, "timeouts: {boot: 0s}\n", "--boot-timeout", "timeouts.boot", 5, "0s: "+timeout),
		bad("ssh timeout 25h", "ssh_timeout", []string{"--ssh-timeout", "25h"}, "timeouts:\n  ssh: 25h\n", "--ssh-timeout", "timeouts.ssh", 6, "25h0m0s: "+timeout),
		bad("cloud-init timeout 0", "cloud_init_timeout", []string{"--cloud-init-timeout", "0s"}, "timeouts: {cloud_init: 0s}\n", "--cloud-init-timeout", "timeouts.cloud_init", 5, "0s: "+timeout),
		bad("script timeout 0", "script_timeout", []string{"--script-timeout", "0s"}, "timeouts: {script: 0s}\n", "--script-timeout", "timeouts.script", 5, "0s: "+timeout),
		bad("snapshot timeout 0", "snapshot_timeout", []string{"--snapshot-timeout", "0s"}, "timeouts: {snapshot: 0s}\n", "--snapshot-timeout", "timeouts.snapshot", 5, "0s: "+timeout),
		bad("copy timeout 0", "copy_timeout", []string{"--copy-timeout", "0s"}, "timeouts: {copy: 0s}\n", "--copy-timeout", "timeouts.copy", 5, "0s: "+timeout),

		good("script url", []string{"--script-url", scriptURL}, "script: {url: "+scriptURL+"}\n"),
		bad("script url no scheme", "script_url", []string{"--script-url", "example.com/s.sh"}, "script: {url: example.com/s.sh}\n", "--script-url", "script.url", 5, `"example.com/s.sh": use an http:// or https:// URL`),
		bad("script url credentials", "script_url", []string{"--script-url", "https://u:pw@example.com/s.sh"}, "script:\n  url: https://u:pw@example.com/s.sh\n", "--script-url", "script.url", 6, "remove the credentials"),
		good("api url", []string{"--runner-api-url", "https://ghe.example.com/api/v3"}, "runner: {api_url: https://ghe.example.com/api/v3}\n"),
		good("api url http on loopback", []string{"--runner-api-url", "http://127.0.0.1:9"}, "runner: {api_url: \"http://127.0.0.1:9\"}\n"),
		bad("api url http", "runner_api_url", []string{"--runner-api-url", "http://ghe.example.com/api/v3"}, "runner: {api_url: http://ghe.example.com/api/v3}\n", "--runner-api-url", "runner.api_url", 5, `"http://ghe.example.com/api/v3": use https:// (the GitHub token is sent to it)`),
		bad("api url ftp", "runner_api_url", []string{"--runner-api-url", "ftp://api.github.com"}, "runner: {api_url: ftp://api.github.com}\n", "--runner-api-url", "runner.api_url", 5, `"ftp://api.github.com": use an http:// or https:// URL`),

		good("proxy", []string{"--proxy", "squid.internal:3128"}, "proxy: squid.internal:3128\n"),
		bad("proxy scheme", "proxy", []string{"--proxy", "http://squid:3128"}, "proxy: http://squid:3128\n", "--proxy", "proxy", 5, `"http://squid:3128": drop the http:// scheme`),
		bad("proxy port", "proxy", []string{"--proxy", "squid:0"}, "proxy: squid:0\n", "--proxy", "proxy", 5, "the port is not a number from 1 to 65535"),
		good("host proxy", []string{"--host-http-proxy", "http://127.0.0.1:3128", "--host-https-proxy", "http://127.0.0.1:3129", "--host-no-proxy", ".internal"},
			"proxy: {host: {http: http://127.0.0.1:3128, https: http://127.0.0.1:3129, no_proxy: .internal}}\n"),
		good("guest and host proxy", []string{"--proxy", "squid.internal:3128", "--host-https-proxy", "http://127.0.0.1:3129"},
			"proxy: {guest: squid.internal:3128, host: {https: http://127.0.0.1:3129}}\n"),
		bad("host proxy credentials", "host_http_proxy", []string{"--host-http-proxy", "http://u:pw@127.0.0.1:3128"}, "proxy: {host: {http: \"http://u:pw@127.0.0.1:3128\"}}\n",
			"--host-http-proxy", "proxy.host.http", 5, `"http://xxxxx@127.0.0.1:3128": remove the credentials`),
		bad("host proxy scheme", "host_https_proxy", []string{"--host-https-proxy", "127.0.0.1:3129"}, "proxy:\n  host:\n    https: 127.0.0.1:3129\n",
			"--host-https-proxy", "proxy.host.https", 7, `"127.0.0.1:3129": use http://HOST:PORT`),
		bad("host no_proxy alone", "host_no_proxy", []string{"--host-no-proxy", ".internal"}, "proxy: {host: {no_proxy: .internal}}\n",
			"--host-no-proxy", "proxy.host.no_proxy", 5, "needs "),

		good("runner version", []string{"--runner-version", "2.330.0"}, "runner: {version: 2.330.0}\n"),
		bad("runner version v", "runner_version", []string{"--runner-version", "v2.330.0"}, "runner: {version: v2.330.0}\n", "--runner-version", "runner.version", 5, `"v2.330.0": use X.Y.Z`),
		bad("runner sha", "runner_sha256", []string{"--runner-sha256", "abc"}, "runner: {version: 2.330.0, sha256: abc}\n", "--runner-sha256", "runner.sha256", 5, "use the 64 hex digits"),
		good("runner repo", []string{"--runner-repo", "my-org/runner"}, "runner: {repo: my-org/runner}\n"),
		bad("runner repo", "runner_repo", []string{"--runner-repo", "runner"}, "runner: {repo: runner}\n", "--runner-repo", "runner.repo", 5, `"runner": use a GitHub owner/name`),

		good("upload clouds", []string{"--upload-clouds", "a,b"}, "upload_clouds: [a, b]\n"),
		bad("upload clouds twice", "upload_clouds", []string{"--upload-clouds", "a,a"}, "upload_clouds: [a, a]\n", "--upload-clouds", "upload_clouds.1", 5, `cloud "a" is listed twice`),
		good("disk format raw", []string{"--disk-format", "raw"}, "disk_format: raw\n"),
		good("disk format any case", []string{"--disk-format", "QCOW2"}, "disk_format: QCOW2\n"),
		bad("disk format vmdk", "disk_format", []string{"--disk-format", "vmdk"}, "disk_format: vmdk\n", "--disk-format", "disk_format", 5, `"vmdk": use qcow2 or raw`),
		good("disk format per cloud", []string{"--upload-clouds", "a,b", "--upload-disk-format", "a=raw"}, "upload_clouds: [{name: a, disk_format: raw}, b]\n"),
		bad("disk format per cloud vhd", "upload_disk_formats", []string{"--upload-clouds", "a,b", "--upload-disk-format", "b=vhd"},
			"upload_clouds:\n  - a\n  - {name: b, disk_format: vhd}\n", "--upload-disk-format", "upload_clouds.1.disk_format", 7, `"vhd": use qcow2 or raw`),
		bad("disk format of the build cloud", "upload_disk_formats", []string{"--upload-clouds", "builder,b", "--upload-disk-format", "builder=raw"},
			"upload_clouds: [{name: builder, disk_format: raw}, b]\n", "--upload-disk-format", "upload_clouds.0.disk_format", 5, `"builder": is the build cloud, whose image is the snapshot as Nova made it`),
		good("zero free space", []string{"--zero-free-space"}, "zero_free_space: true\n"),
		good("scratch dir", []string{"--scratch-dir", "/var/tmp"}, "scratch_dir: /var/tmp\n"),
		bad("scratch dir relative", "scratch_dir", []string{"--scratch-dir", "tmp"}, "scratch_dir: tmp\n", "--scratch-dir", "scratch_dir", 5, `"tmp": give an absolute directory, or none for $TMPDIR`),
		bad("upload clouds empty item", "upload_clouds", []string{"--upload-clouds", "a,,b"}, "upload_clouds:\n  - a\n  - \"\"\n  - b\n", "--upload-clouds", "upload_clouds.1", 7, "item 2 is empty"),

		bad("skip checks alone", "skip_default_checks", []string{"--skip-default-checks"}, "skip_default_checks: true\n", "--skip-default-checks", "skip_default_checks", 5, "(the built-in recipe is always verified)"),
		bad("builder", "builder", []string{"--builder", "chroot"}, "builder: chroot\n", "--builder", "builder", 5, `"chroot": use openstack or local`),
		good("ssh jump with key", []string{"--ssh-jump", "ops@127.0.0.9:2222", "--ssh-jump-key", jf.key, "--ssh-jump-known-hosts", jf.knownHosts},
			"ssh_jump: {host: \"ops@127.0.0.9:2222\", key: "+jf.key+", known_hosts: "+jf.knownHosts+"}\n"),
		good("ssh jump with agent", []string{"--ssh-jump", "ops@127.0.0.9:2222", "--ssh-jump-known-hosts", jf.knownHosts},
			"ssh_jump:\n  host: ops@127.0.0.9:2222\n  known_hosts: "+jf.knownHosts+"\n"),
		bad("ssh jump without user", "ssh_jump", []string{"--ssh-jump", "127.0.0.9:2222", "--ssh-jump-known-hosts", jf.knownHosts},
			"ssh_jump: {host: \"127.0.0.9:2222\", known_hosts: "+jf.knownHosts+"}\n", "--ssh-jump", "ssh_jump.host", 5, `"127.0.0.9:2222": the login user is missing`),
		bad("ssh jump password", "ssh_jump", []string{"--ssh-jump", "ops:hunter2@127.0.0.9", "--ssh-jump-known-hosts", jf.knownHosts},
			"ssh_jump:\n  known_hosts: "+jf.knownHosts+"\n  host: ops:hunter2@127.0.0.9\n", "--ssh-jump", "ssh_jump.host", 7, `"xxxxx@127.0.0.9": a password is not accepted`),
		bad("ssh jump port", "ssh_jump", []string{"--ssh-jump", "ops@127.0.0.9:0", "--ssh-jump-known-hosts", jf.knownHosts},
			"ssh_jump: {host: \"ops@127.0.0.9:0\", known_hosts: "+jf.knownHosts+"}\n", "--ssh-jump", "ssh_jump.host", 5, "the port is not a number from 1 to 65535"),
		bad("ssh jump without known hosts", "ssh_jump_known_hosts", []string{"--ssh-jump", "ops@127.0.0.9:2222"},
			"ssh_jump: {host: \"ops@127.0.0.9:2222\"}\n", "--ssh-jump-known-hosts", "ssh_jump.known_hosts", 5, "never trusted blindly"),
		bad("ssh jump host not known", "ssh_jump_known_hosts", []string{"--ssh-jump", "ops@127.0.0.9", "--ssh-jump-known-hosts", jf.knownHosts},
			"ssh_jump: {host: ops@127.0.0.9, known_hosts: "+jf.knownHosts+"}\n", "--ssh-jump-known-hosts", "ssh_jump.known_hosts", 5, "no key for 127.0.0.9 in it"),
		bad("ssh jump key loose", "ssh_jump_key", []string{"--ssh-jump", "ops@127.0.0.9:2222", "--ssh-jump-key", jf.looseKey, "--ssh-jump-known-hosts", jf.knownHosts},
			"ssh_jump: {host: \"ops@127.0.0.9:2222\", key: "+jf.looseKey+", known_hosts: "+jf.knownHosts+"}\n", "--ssh-jump-key", "ssh_jump.key", 5, "has mode 0644: others may read the private key; chmod 600 it"),
		bad("ssh jump key not a key", "ssh_jump_key", []string{"--ssh-jump", "ops@127.0.0.9:2222", "--ssh-jump-key", jf.notKey, "--ssh-jump-known-hosts", jf.knownHosts},
			"ssh_jump: {host: \"ops@127.0.0.9:2222\", key: "+jf.notKey+", known_hosts: "+jf.knownHosts+"}\n", "--ssh-jump-key", "ssh_jump.key", 5, "not an OpenSSH or PEM private key"),
		bad("ssh jump key alone", "ssh_jump_key", []string{"--ssh-jump-key", jf.key}, "ssh_jump: {key: "+jf.key+"}\n", "--ssh-jump-key", "ssh_jump.key", 5, "applies only with"),
		bad("isolated on openstack", "isolated", []string{"--isolated"}, "local: {isolated: true}\n", "--isolated", "local.isolated", 5, "applies only to"),
	}
	cases = append(cases,
		settingCase{name: "prefix", flags: []string{"--prefix", "grib.2"}, file: "cloud: builder\nprefix: grib.2\nmatrix: {arches: [x64]}\n", ok: true},
		settingCase{name: "bad prefix", setting: "prefix", flags: []string{"--prefix", "-grib"}, file: "cloud: builder\nprefix: -grib\nmatrix: {arches: [x64]}\n",
			flag: "--prefix", key: "prefix", line: 2, detail: `"-grib": use 1-63 letters`},
		settingCase{name: "arm on noble", flags: []string{"--arch", "armhf", "-b", "noble"}, file: "cloud: builder\nprefix: grib\nmatrix: {arches: [armhf], bases: [noble]}\n", ok: true},
		settingCase{name: "arm on jammy", setting: "base", flags: []string{"--arch", "armhf", "-b", "jammy"},
			file: "cloud: builder\nprefix: grib\nmatrix:\n  arches: [x64, armhf]\n  bases:\n    - noble\n    - jammy\n",
			flag: "--base-image", key: "matrix.bases.1", line: 7, detail: "jammy: arch arm needs noble or resolute"},
		settingCase{name: "no cloud", setting: "cloud", noCloud: true, file: "prefix: grib\nmatrix: {arches: [x64]}\n",
			flag: "--os-cloud", key: "cloud", line: 1, detail: "openstack: name the clouds.yaml cloud to build in"},
		settingCase{name: "local upload without cloud", setting: "cloud", noCloud: true,
			flags: []string{"--builder", "local", "--output", "/tmp/grib.qcow2", "--upload-clouds", "a"},
			file:  "builder: local\nprefix: grib\nmatrix: {arches: [x64]}\nlocal: {output_dir: /tmp}\nupload_clouds: [a]\n",
			flag:  "--os-cloud", key: "cloud", line: 1, detail: "it names the cloud whose clouds.yaml entry is read first"},
	)
	return cases
}

func TestSettingsSameVerdictFromFlagsAndYAML(t *testing.T) {
	script := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "#!/bin/sh\ntrue\n")
	}))
	t.Cleanup(script.Close)
	backend := Backend{Builds: fakeBuilds(func(_ context.Context, _ *slog.Logger, spec config.RunSpec, _ release.Release, _ []byte) ([]config.PublishedImage, error) {
		var out []config.PublishedImage
		for i, c := range spec.PublishClouds() {
			out = append(out, config.PublishedImage{Cloud: c, ID: fmt.Sprint(i + 1), Name: spec.ImageName})
		}
		return out, nil
	})}
	for _, tt := range settingCases(script.URL+"/setup.sh", writeJumpSettingFiles(t)) {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.ok {
				// The case's flag and key are those config.Settings lists.
				if got := config.FlagOf(tt.setting); got != tt.flag {
					t.Errorf("config.FlagOf(%q) = %q, the case says %q", tt.setting, got, tt.flag)
				}
				// A key of a list's items ("upload_clouds.*.disk_format") names one item.
				got := config.KeyOf(tt.setting)
				pattern := "^" + strings.ReplaceAll(regexp.QuoteMeta(got), `\*`, `[0-9]+`) + `(\.|$)`
				if !regexp.MustCompile(pattern).MatchString(tt.key) {
					t.Errorf("config.KeyOf(%q) = %q, the case says %q", tt.setting, got, tt.key)
				}
			}

			// The flag path: run, with a fake builder.
			var root []string
			if !tt.noCloud {
				root = []string{"--os-cloud", "builder"}
			}
			args := append(pinned(append(root, "run", "grib-noble-x64", "--arch", "x64")...), tt.flags...)
			r := runApp(t, testEnv(), backend, args...)
			if tt.ok {
				if r.code != 0 {
					t.Errorf("run %s: exit %d, want 0 (stderr %q)", strings.Join(tt.flags, " "), r.code, r.stderr)
				}
			} else {
				checkUsage(t, r, tt.detail)
				if !strings.HasPrefix(r.stderr, "Error: "+tt.flag+" ") && !strings.HasPrefix(r.stderr, "Error: "+tt.flag+":") {
					t.Errorf("run %s: stderr %q does not start by naming %s", strings.Join(tt.flags, " "), r.stderr, tt.flag)
				}
			}

			// The YAML path: the service's configuration loader.
			file := tt.file
			if file == "" {
				file = settingsYAML + tt.yaml
			}
			_, err := service.ParseConfig("c.yaml", []byte(file))
			if tt.ok {
				if err != nil {
					t.Errorf("ParseConfig: %v, want it accepted\n%s", err, file)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseConfig accepted what run refused\n%s", file)
			}
			if !errs.Is(err, errs.KindUsage) {
				t.Errorf("ParseConfig: kind %v, want usage", errs.KindOf(err))
			}
			want := fmt.Sprintf("c.yaml:%d: %s: ", tt.line, tt.key)
			if msg := err.Error(); !strings.HasPrefix(msg, want) || !strings.Contains(msg, tt.detail) || strings.Contains(msg, "\n") {
				t.Errorf("ParseConfig: %q, want one line starting %q and containing %q", msg, want, tt.detail)
			}
		})
	}
}

// jumpSettingFiles are the files the --ssh-jump cases name.
type jumpSettingFiles struct {
	key        string // an ed25519 private key, 0600
	looseKey   string // the same, 0644
	notKey     string // 0600, not a key
	knownHosts string // a key for [127.0.0.9]:2222
}

func writeJumpSettingFiles(t *testing.T) jumpSettingFiles {
	t.Helper()
	dir := t.TempDir()
	signer, keyPEM := testenv.NewEd25519(t, "")
	f := jumpSettingFiles{key: filepath.Join(dir, "id"), looseKey: filepath.Join(dir, "id-loose"), notKey: filepath.Join(dir, "not-a-key"), knownHosts: filepath.Join(dir, "known_hosts")}
	for _, w := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{f.key, keyPEM, 0o600},
		{f.looseKey, keyPEM, 0o644},
		{f.notKey, []byte("not a key\n"), 0o600},
		{f.knownHosts, []byte("[127.0.0.9]:2222 " + string(ssh.MarshalAuthorizedKey(signer.PublicKey()))), 0o644},
	} {
		if err := os.WriteFile(w.path, w.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(w.path, w.mode); err != nil {
			t.Fatal(err)
		}
	}
	return f
}
