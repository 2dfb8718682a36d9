package service

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

const minimalConfig = `
cloud: builder
prefix: grib
matrix:
  arches: [x64]
`

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig("/etc/grib.yaml", []byte(minimalConfig))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"builder", c.Build.Builder, config.BuilderOpenStack},
		{"bases", c.Bases, []config.Base{config.BaseNoble}},
		{"keep", c.Build.KeepRevisions, 5},
		{"visibility", c.Build.Visibility, config.VisibilityPrivate},
		{"runner", c.Build.RunnerVersion, ""},
		{"repo", c.Build.RunnerRepo, config.DefaultRunnerRepo},
		{"interval", c.Interval, 6 * time.Hour},
		{"check", c.CheckInterval, time.Hour},
		{"refresh", c.BaseImageRefresh, 7 * 24 * time.Hour},
		{"retry", [3]any{c.RetryAttempts, c.RetryMin, c.RetryMax}, [3]any{5, 5 * time.Second, time.Minute}},
		{"listen", c.Listen, "127.0.0.1:9180"},
		{"timeouts", c.Build.Timeouts, config.DefaultTimeouts()},
		{"clouds", c.PublishClouds(), []string{"builder"}},
		{"path", c.Path, "/etc/grib.yaml"},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestParseConfigFull(t *testing.T) {
	data := `
builder: openstack
cloud: builder
upload_clouds: [it-b, it-c]
prefix: grib
matrix:
  bases: [jammy, "24.04"]
  arches: [amd64, arm64]
keep_revisions: 3
runner:
  version: 2.330.0
  sha256: ` + strings.Repeat("a", 64) + `
  token: {env: MY_TOKEN}
proxy: squid.internal:3128
script:
  url: https://example.com/setup.sh
  secrets:
    TOKEN: {file: /etc/grib/token}
timeouts: {boot: 5m, cloud_init: 45m}
retry: {attempts: 2, min_delay: 1s, max_delay: 2s}
callback:
  on_success: [/usr/local/bin/hook, --flag]
  on_failure: /usr/local/bin/fail
  timeout: 30s
latest_file: /var/lib/grib/latest.json
schedule:
  interval: 30m
  check_interval: 5m
  base_image_refresh: 0s
metrics: {textfile_dir: /var/lib/node_exporter}
serve: {listen: "127.0.0.1:0"}
`
	c, err := ParseConfig("c.yaml", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	cells := c.Cells()
	var names []string
	for _, cell := range cells {
		names = append(names, cell.ImageName+"/"+cell.Tags())
	}
	want := "grib-jammy-x64/x64,jammy grib-noble-x64/x64,noble grib-jammy-arm64/arm64,jammy grib-noble-arm64/arm64,noble"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("cells %s, want %s", got, want)
	}
	if c.Build.Timeouts.Boot != 5*time.Minute || c.Build.Timeouts.CloudInit != 45*time.Minute || c.Build.Timeouts.SSH != config.DefaultTimeouts().SSH {
		t.Errorf("timeouts %+v", c.Build.Timeouts)
	}
	if c.BaseImageRefresh != 0 || c.Interval != 30*time.Minute || c.CheckInterval != 5*time.Minute {
		t.Errorf("schedule %v %v %v", c.Interval, c.CheckInterval, c.BaseImageRefresh)
	}
	if strings.Join(c.OnSuccess, " ") != "/usr/local/bin/hook --flag" || strings.Join(c.OnFailure, " ") != "/usr/local/bin/fail" {
		t.Errorf("callbacks %q %q", c.OnSuccess, c.OnFailure)
	}
	if c.ScriptSecrets["TOKEN"].File != "/etc/grib/token" || c.RunnerToken.Env != "MY_TOKEN" {
		t.Errorf("secrets %+v %+v", c.ScriptSecrets, c.RunnerToken)
	}
	if p := c.TextfilePath(); p != "/var/lib/node_exporter/github_runner_image_builder_grib.prom" {
		t.Errorf("textfile %s", p)
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name, data string
		want       string // substring of the one-line error
	}{
		{"empty", "", "c.yaml: the configuration is empty"},
		{"not a mapping", "- a\n- b\n", "c.yaml:1: the configuration must be a mapping"},
		{"bad yaml", "cloud: [\n", "c.yaml:"},
		{"unknown key", minimalConfig + "flavour: big\n", `c.yaml:6: unknown key flavour`},
		// --keep-on-failure is for one debugging run, never a scheduled build.
		{"keep on failure", minimalConfig + "keep_on_failure: true\n", `c.yaml:6: unknown key keep_on_failure`},
		{"unknown nested key", minimalConfig + "runner:\n  versoin: 1.2.3\n", "c.yaml:7: unknown key versoin"},
		{"wrong type", minimalConfig + "keep_revisions: many\n", "c.yaml:6: cannot unmarshal"},
		{"no prefix", "cloud: b\nmatrix: {arches: [x64]}\n", "c.yaml:1: prefix: required"},
		{"bad prefix", "cloud: b\nprefix: -x\nmatrix: {arches: [x64]}\n", `c.yaml:2: prefix: "-x": use 1-63 letters`},
		{"no cloud", "prefix: g\nmatrix: {arches: [x64]}\n", "cloud: required with builder openstack"},
		{"no arches", "cloud: b\nprefix: g\n", "matrix.arches: list at least one"},
		{"bad arch", "cloud: b\nprefix: g\nmatrix:\n  arches:\n    - x64\n    - sparc\n", "c.yaml:6: matrix.arches.1: unknown architecture"},
		{"arm on jammy", "cloud: b\nprefix: g\nmatrix:\n  arches: [arm]\n  bases: [jammy]\n", "c.yaml:5: matrix.bases.0: jammy: arch arm needs noble or resolute"},
		{"duplicate base", "cloud: b\nprefix: g\nmatrix: {arches: [x64], bases: [noble, '24.04']}\n", "noble is listed twice"},
		{"keep 0", minimalConfig + "keep_revisions: 0\n", "c.yaml:6: keep_revisions: 0"},
		{"interval", minimalConfig + "schedule:\n  interval: 7m\n", "c.yaml:7: schedule.interval: 7m0s"},
		{"interval no unit", minimalConfig + "schedule:\n  interval: 6\n", `c.yaml:7: "6" is not a duration`},
		{"check > interval", minimalConfig + "schedule: {interval: 1h, check_interval: 2h}\n", "schedule.check_interval: 2h0m0s"},
		{"runner version", minimalConfig + "runner: {version: v2.3.4}\n", "runner.version"},
		{"sha without version", minimalConfig + "runner: {sha256: " + strings.Repeat("b", 64) + "}\n", "runner.sha256: pins one version"},
		{"proxy scheme", minimalConfig + "proxy: http://squid:3128\n", `c.yaml:6: proxy: "http://squid:3128": drop the http:// scheme`},
		{"relative callback", minimalConfig + "callback: {on_success: hook.sh}\n", "callback.on_success: \"hook.sh\": the program must be an absolute path"},
		{"relative latest", minimalConfig + "latest_file: latest.json\n", "latest_file: \"latest.json\": give an absolute path"},
		{"upload twice", minimalConfig + "upload_clouds: [a, a]\n", "upload_clouds.1: cloud \"a\" is listed twice"},
		{"local without output", "builder: local\nprefix: g\nmatrix: {arches: [x64]}\n", "local.output_dir: required"},
		{"local option on openstack", minimalConfig + "local: {isolated: true}\n", "c.yaml:6: local.isolated: applies only to builder local"},
		{"output dir on openstack", minimalConfig + "local: {output_dir: /srv}\n", "c.yaml:6: local.output_dir: applies only to builder local"},
		{"skip checks alone", minimalConfig + "skip_default_checks: true\n", "c.yaml:6: skip_default_checks: needs user_data_file"},
		{"listen", minimalConfig + "serve: {listen: localhost}\n", "serve.listen"},
		{"listen on every interface", minimalConfig + "serve:\n  listen: 0.0.0.0:9180\n", `c.yaml:7: serve.listen: "0.0.0.0:9180" is not a loopback address: set serve.allow_remote: true`},
		{"listen without a host", minimalConfig + "serve: {listen: \":9180\"}\n", `c.yaml:6: serve.listen: ":9180" is not a loopback address`},
		{"listen on ::", minimalConfig + "serve: {listen: \"[::]:9180\"}\n", `serve.listen: "[::]:9180" is not a loopback address`},
		{"listen on a name", minimalConfig + "serve: {listen: \"builder.internal:9180\"}\n", `serve.listen: "builder.internal:9180" is not a loopback address`},
		{"listen remote, allow_remote false", minimalConfig + "serve: {listen: \"192.0.2.7:9180\", allow_remote: false}\n", `serve.listen: "192.0.2.7:9180" is not a loopback address`},
		{"allow_remote not a bool", minimalConfig + "serve: {allow_remote: maybe}\n", "c.yaml:6: cannot unmarshal"},
		{"secret two sources", minimalConfig + "script:\n  secrets:\n    A: {file: /a, env: B}\n", "c.yaml:8: a secret needs exactly one of file or env"},
		{"secret relative file", minimalConfig + "script:\n  secrets:\n    A: {file: a}\n", "secret file \"a\": give an absolute path"},
		{"secret name", minimalConfig + "script:\n  secrets:\n    a-b: {env: X}\n", "script.secrets.a-b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("c.yaml", []byte(tt.data))
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			if !errs.Is(err, errs.KindUsage) {
				t.Errorf("kind %v, want usage", errs.KindOf(err))
			}
			if msg := err.Error(); !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
				t.Errorf("error %q, want one line containing %q", msg, tt.want)
			}
		})
	}
}

// serve.listen: loopback, or anything with serve.allow_remote: true.
func TestParseConfigListen(t *testing.T) {
	tests := []struct {
		serve, listen string
		remote        bool
	}{
		{"{listen: \"127.0.0.1:9180\"}", "127.0.0.1:9180", false},
		{"{listen: \"127.8.0.1:0\"}", "127.8.0.1:0", false},
		{"{listen: \"[::1]:9180\"}", "[::1]:9180", false},
		{"{listen: \"localhost:9180\"}", "localhost:9180", false},
		{"{listen: \"0.0.0.0:9180\", allow_remote: true}", "0.0.0.0:9180", true},
		{"{listen: \":9180\", allow_remote: true}", ":9180", true},
		{"{allow_remote: true}", DefaultListen, true},
	}
	for _, tt := range tests {
		c, err := ParseConfig("c.yaml", []byte(minimalConfig+"serve: "+tt.serve+"\n"))
		if err != nil {
			t.Errorf("serve: %s: %v", tt.serve, err)
			continue
		}
		if c.Listen != tt.listen || c.AllowRemote != tt.remote {
			t.Errorf("serve: %s: listen %q allow_remote %v, want %q %v", tt.serve, c.Listen, c.AllowRemote, tt.listen, tt.remote)
		}
		if err := c.CheckListen(c.Listen); err != nil {
			t.Errorf("serve: %s: CheckListen(%s): %v", tt.serve, c.Listen, err)
		}
	}
}

// CheckListen is the same rule for --listen.
func TestCheckListen(t *testing.T) {
	local, err := ParseConfig("/etc/grib.yaml", []byte(minimalConfig))
	if err != nil {
		t.Fatal(err)
	}
	remote, err := ParseConfig("/etc/grib.yaml", []byte(minimalConfig+"serve: {allow_remote: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		c       *Config
		addr    string
		wantErr string
	}{
		{local, "127.0.0.1:0", ""},
		{local, "[::1]:0", ""},
		{local, "[::ffff:127.0.0.1]:0", ""},
		{local, "0.0.0.0:9180", `"0.0.0.0:9180" is not a loopback address: set serve.allow_remote: true in /etc/grib.yaml`},
		{local, ":9180", "is not a loopback address"},
		{local, "10.1.2.3:9180", "is not a loopback address"},
		{local, "nohost", "use host:port"},
		{remote, "0.0.0.0:9180", ""},
		{remote, "10.1.2.3:9180", ""},
	}
	for _, tt := range tests {
		err := tt.c.CheckListen(tt.addr)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("allow_remote %v, %s: %v", tt.c.AllowRemote, tt.addr, err)
		case tt.wantErr != "" && (err == nil || !errs.Is(err, errs.KindUsage) || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("allow_remote %v, %s: %v, want a usage error with %q", tt.c.AllowRemote, tt.addr, err, tt.wantErr)
		}
	}
}

// CheckListen accepts without serve.allow_remote only a loopback IP
// address or localhost, with allow_remote every host:port, and refuses in
// one line.
func FuzzCheckListen(f *testing.F) {
	for _, s := range []string{"127.0.0.1:9180", "[::1]:0", "localhost:1", "0.0.0.0:9180", ":9180", "[::]:1",
		"[::ffff:127.0.0.1]:1", "[fe80::1%lo]:1", "127.0.0.1", "a\nb:1", "LOCALHOST:80"} {
		f.Add(s)
	}
	local, err := ParseConfig("/etc/grib.yaml", []byte(minimalConfig))
	if err != nil {
		f.Fatal(err)
	}
	remote, err := ParseConfig("/etc/grib.yaml", []byte(minimalConfig+"serve: {allow_remote: true}\n"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		lerr, rerr := local.CheckListen(addr), remote.CheckListen(addr)
		for _, err := range []error{lerr, rerr} {
			if err != nil && (!errs.Is(err, errs.KindUsage) || strings.ContainsAny(err.Error(), "\n\r")) {
				t.Fatalf("%q: %v: want a one-line usage error", addr, err)
			}
		}
		host, _, splitErr := net.SplitHostPort(addr)
		if (rerr == nil) != (splitErr == nil) {
			t.Fatalf("%q: allow_remote: %v, but host:port split: %v", addr, rerr, splitErr)
		}
		if lerr != nil {
			return
		}
		if rerr != nil {
			t.Fatalf("%q: accepted on loopback only, refused with allow_remote: %v", addr, rerr)
		}
		ip, perr := netip.ParseAddr(host)
		if !strings.EqualFold(host, "localhost") && (perr != nil || !ip.Unmap().IsLoopback() || ip.IsUnspecified()) {
			t.Fatalf("%q: host %q accepted without serve.allow_remote", addr, host)
		}
	})
}

// A secret written as a value in the configuration is refused without
// being quoted back, wherever a secret is expected.
func TestParseConfigNeverEchoesSecrets(t *testing.T) {
	for _, data := range []string{
		minimalConfig + "script:\n  secrets:\n    TOKEN: hunter2-secret\n",
		minimalConfig + "runner:\n  token: hunter2-secret\n",
		minimalConfig + "script:\n  secrets:\n    TOKEN: {value: hunter2-secret}\n",
		minimalConfig + "password: hunter2-secret\n",
	} {
		_, err := ParseConfig("c.yaml", []byte(data))
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error %v: want a refusal that does not quote the value", err)
		}
	}
}

func TestSecretRefRead(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	loose := filepath.Join(dir, "loose")
	if err := os.WriteFile(good, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(loose, []byte("s3cret"), 0o644); err != nil {
		t.Fatal(err)
	}
	getenv := func(k string) string { return map[string]string{"SET": "v"}[k] }
	tests := []struct {
		ref     SecretRef
		want    string
		wantErr string
	}{
		{SecretRef{File: good}, "s3cret", ""},
		{SecretRef{File: loose}, "", "others may read it"},
		{SecretRef{File: filepath.Join(dir, "none")}, "", "no such file"},
		{SecretRef{Env: "SET"}, "v", ""},
		{SecretRef{Env: "UNSET"}, "", "unset or empty"},
	}
	for _, tt := range tests {
		got, err := tt.ref.Read(getenv)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("%v: error %v, want %q", tt.ref, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got.Reveal() != tt.want {
			t.Errorf("%v: %q, %v", tt.ref, got.Reveal(), err)
		}
	}
}

func TestRunSpecOfCell(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "tok")
	if err := os.WriteFile(tok, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := ParseConfig("c.yaml", []byte(minimalConfig+"upload_clouds: [b1]\nkeep_revisions: 2\nscript:\n  url: http://127.0.0.1:1/s.sh\n  secrets:\n    TOK: {file: "+tok+"}\n    ENVED: {env: FROM_ENV}\n"))
	if err != nil {
		t.Fatal(err)
	}
	cell := c.Cells()[0]
	spec, err := c.RunSpec(cell, func(k string) string { return map[string]string{"FROM_ENV": "e"}[k] }, []string{"keep-me"})
	if err != nil {
		t.Fatal(err)
	}
	if spec.ImageName != "grib-noble-x64" || spec.Cloud != "builder" || spec.KeepRevisions != 2 ||
		strings.Join(spec.UploadClouds, ",") != "b1" || strings.Join(spec.Protect, ",") != "keep-me" {
		t.Errorf("spec %+v", spec)
	}
	if spec.Secrets["TOK"].Reveal() != "abc" || spec.Secrets["ENVED"].Reveal() != "e" {
		t.Errorf("secrets not read")
	}
	if _, err := c.RunSpec(cell, func(string) string { return "" }, nil); err == nil || !strings.Contains(err.Error(), "FROM_ENV") {
		t.Errorf("missing env secret: %v", err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(minimalConfig))
	f.Add([]byte("cloud: [\n"))
	f.Add([]byte("prefix: g\nmatrix: {arches: [x64, arm], bases: [noble]}\ncloud: c\nscript: {secrets: {A: {env: B}}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig("f.yaml", data)
		if err != nil {
			if !errs.Is(err, errs.KindUsage) {
				t.Fatalf("error of kind %v: %v", errs.KindOf(err), err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		if c.Build.Prefix == "" || len(c.Cells()) == 0 || c.Interval <= 0 || c.CheckInterval > c.Interval {
			t.Fatalf("accepted an invalid configuration: %+v", c)
		}
		for _, cell := range c.Cells() {
			if !cell.Base.SupportsArch(cell.Arch) {
				t.Fatalf("accepted cell %+v", cell)
			}
		}
	})
}

// The README's example configuration is valid.
func TestReadmeExampleConfig(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(data), "<!-- service-config:begin -->\n```yaml\n")
	block, _, ok2 := strings.Cut(block, "```\n<!-- service-config:end -->")
	if !ok || !ok2 {
		t.Fatal("README: no service-config block")
	}
	c, err := ParseConfig("README.md", []byte(block))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Cells()) != 2 || c.Interval != 6*time.Hour || c.ScriptSecrets["REGISTRY_TOKEN"].File == "" {
		t.Errorf("parsed %+v", c)
	}
}
