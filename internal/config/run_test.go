package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

const testSHA = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// goodInput is a valid `run` as typed; tests change one thing in it.
func goodInput() RunInput {
	return RunInput{
		ImageName: "p-noble-x64", Cloud: "build", Arch: "x64", Base: "noble", Prefix: "p",
		KeepRevisions: 5, Visibility: "private", RunnerVersion: "2.330.0", RunnerSHA256: testSHA,
		RunnerRepo: DefaultRunnerRepo, RunnerAPIURL: DefaultRunnerAPIURL,
		Timeouts: DefaultTimeouts(), Builder: "openstack", HostArch: ArchX64,
	}
}

func TestNewRunSpecRefuses(t *testing.T) {
	tests := []struct {
		name   string
		change func(*RunInput)
		want   string // must appear in the one-line message
	}{
		{"no arch", func(in *RunInput) { in.Arch = "" }, "--arch is required"},
		{"bad arch", func(in *RunInput) { in.Arch = "i386" }, "--arch"},
		{"bad base", func(in *RunInput) { in.Base = "bionic" }, "--base-image"},
		{"base version typo", func(in *RunInput) { in.Base = "24.10" }, "--base-image"},
		{"armhf on jammy", func(in *RunInput) { in.Arch, in.Base = "armhf", "jammy" }, "--base-image jammy: arch arm needs noble or resolute"},
		{"armhf on focal", func(in *RunInput) { in.Arch, in.Base = "arm", "20.04" }, "--base-image"},
		{"keep 0", func(in *RunInput) { in.KeepRevisions = 0 }, "--keep-revisions 0"},
		{"keep negative", func(in *RunInput) { in.KeepRevisions = -3 }, "--keep-revisions"},
		{"version v-prefixed", func(in *RunInput) { in.RunnerVersion = "v2.330.0" }, "drop the leading v"},
		{"version two parts", func(in *RunInput) { in.RunnerVersion = "2.330" }, "--runner-version"},
		{"version leading zero", func(in *RunInput) { in.RunnerVersion = "2.030.0" }, "--runner-version"},
		{"version words", func(in *RunInput) { in.RunnerVersion = "newest" }, "--runner-version"},
		{"sha short", func(in *RunInput) { in.RunnerSHA256 = "abc" }, "--runner-sha256"},
		{"sha not hex", func(in *RunInput) { in.RunnerSHA256 = strings.Repeat("g", 64) }, "--runner-sha256"},
		{"sha too long", func(in *RunInput) { in.RunnerSHA256 = testSHA + "0" }, "--runner-sha256"},
		{"repo no slash", func(in *RunInput) { in.RunnerRepo = "runner" }, "--runner-repo"},
		{"flavor padded", func(in *RunInput) { in.Flavor = " m1.large" }, `--flavor " m1.large": give a flavor name or ID without spaces around it`},
		{"network with a newline", func(in *RunInput) { in.Network = "net\nx" }, `--network "net\nx": give a network name or ID`},
		{"repo dotdot", func(in *RunInput) { in.RunnerRepo = "a/.." }, "--runner-repo"},
		{"api url scheme", func(in *RunInput) { in.RunnerAPIURL = "ftp://api.github.com" }, "--runner-api-url"},
		{"api url http", func(in *RunInput) { in.RunnerAPIURL = "http://api.github.com" }, `--runner-api-url "http://api.github.com": use https://`},
		{"api url http upper case", func(in *RunInput) { in.RunnerAPIURL = "HTTP://ghe.example.com/api/v3" }, "use https://"},
		{"api url http private address", func(in *RunInput) { in.RunnerAPIURL = "http://10.0.0.1:8080" }, "use https://"},
		{"api url http loopback look-alike", func(in *RunInput) { in.RunnerAPIURL = "http://127.0.0.1.example.com/" }, "use https://"},
		{"api url http localhost subdomain", func(in *RunInput) { in.RunnerAPIURL = "http://localhost.example.com/" }, "use https://"},
		{"proxy scheme", func(in *RunInput) { in.Proxy = "http://squid:3128" }, "drop the http:// scheme"},
		{"proxy no port", func(in *RunInput) { in.Proxy = "squid" }, "--proxy"},
		{"proxy port 0", func(in *RunInput) { in.Proxy = "squid:0" }, "--proxy"},
		{"proxy port big", func(in *RunInput) { in.Proxy = "squid:65536" }, "--proxy"},
		{"proxy ipv6", func(in *RunInput) { in.Proxy = "[::1]:3128" }, "IPv6"},
		{"proxy brackets", func(in *RunInput) { in.Proxy = "[squid]:3128" }, "--proxy"},
		{"proxy creds", func(in *RunInput) { in.Proxy = "u:p@squid:3128" }, "--proxy"},
		{"proxy bad host", func(in *RunInput) { in.Proxy = "sq uid:3128" }, "--proxy"},
		{"script no scheme", func(in *RunInput) { in.ScriptURL = "example.com/x.sh" }, "--script-url"},
		{"script ftp", func(in *RunInput) { in.ScriptURL = "ftp://example.com/x.sh" }, "--script-url"},
		{"script no host", func(in *RunInput) { in.ScriptURL = "https:///x.sh" }, "--script-url"},
		{"script creds", func(in *RunInput) { in.ScriptURL = "https://u:pw@example.com/x.sh" }, "remove the credentials"},
		{"image name empty", func(in *RunInput) { in.ImageName = "" }, "IMAGE_NAME"},
		{"image name long", func(in *RunInput) { in.ImageName = strings.Repeat("a", 256) }, "IMAGE_NAME"},
		{"image name control", func(in *RunInput) { in.ImageName = "a\tb" }, "IMAGE_NAME"},
		{"image name space", func(in *RunInput) { in.ImageName = " a" }, "IMAGE_NAME"},
		{"prefix", func(in *RunInput) { in.Prefix = "-p" }, "--prefix"},
		{"prefix slash", func(in *RunInput) { in.Prefix = "a/b" }, "--prefix"},
		{"upload empty item", func(in *RunInput) { in.UploadClouds = "a,,b" }, "--upload-clouds: item 2 is empty"},
		{"upload trailing comma", func(in *RunInput) { in.UploadClouds = "a," }, "--upload-clouds"},
		{"upload duplicate", func(in *RunInput) { in.UploadClouds = "a, b ,a" }, `cloud "a" is listed twice`},
		{"visibility", func(in *RunInput) { in.Visibility = "secret" }, "--visibility"},
		{"builder", func(in *RunInput) { in.Builder = "chroot" }, "--builder"},
		{"secret name", func(in *RunInput) { in.Environ = []string{SecretEnvPrefix + "A-B=x"} }, SecretEnvPrefix + "A-B"},
		{"secret empty name", func(in *RunInput) { in.Environ = []string{SecretEnvPrefix + "=x"} }, SecretEnvPrefix},
		{"boot timeout 0", func(in *RunInput) { in.Timeouts.Boot = 0 }, "--boot-timeout"},
		{"ssh timeout negative", func(in *RunInput) { in.Timeouts.SSH = -time.Second }, "--ssh-timeout"},
		{"cloud-init timeout huge", func(in *RunInput) { in.Timeouts.CloudInit = 25 * time.Hour }, "--cloud-init-timeout"},
		{"script timeout", func(in *RunInput) { in.Timeouts.Script = 0 }, "--script-timeout"},
		{"snapshot timeout", func(in *RunInput) { in.Timeouts.Snapshot = 0 }, "--snapshot-timeout"},
		{"copy timeout", func(in *RunInput) { in.Timeouts.Copy = 0 }, "--copy-timeout"},
		{"no cloud", func(in *RunInput) { in.Cloud = "" }, "--os-cloud"},
		{"output with openstack", func(in *RunInput) { in.Output = "/tmp/x.qcow2" }, "--output: applies only to --builder local"},
		{"isolated with openstack", func(in *RunInput) { in.Isolated = true }, "--isolated"},
		{"local without output", func(in *RunInput) { in.Builder = "local" }, "--output: required with --builder local"},
		{"local other arch", func(in *RunInput) { in.Builder, in.Output, in.Arch = "local", "/tmp/x", "s390x" }, "--builder local"},
		{"local unknown host", func(in *RunInput) { in.Builder, in.Output, in.HostArch = "local", "/tmp/x", "" }, "unsupported architecture"},
		{"local upload without cloud", func(in *RunInput) {
			in.Builder, in.Output, in.Cloud, in.UploadClouds = "local", "/tmp/x", "", "a"
		}, "--os-cloud"},
		{"user-data blank", func(in *RunInput) { in.UserDataFile = " " }, "--user-data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := goodInput()
			tt.change(&in)
			_, err := NewRunSpec(in)
			if !errs.Is(err, errs.KindUsage) {
				t.Fatalf("NewRunSpec: got %v (kind %v), want a usage error", err, errs.KindOf(err))
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("message %q does not contain %q", msg, tt.want)
			}
			if strings.ContainsAny(msg, "\n\r") {
				t.Errorf("message is not one line: %q", msg)
			}
		})
	}
}

func TestNewRunSpecAccepts(t *testing.T) {
	tests := []struct {
		name   string
		change func(*RunInput)
		check  func(t *testing.T, s RunSpec)
	}{
		{"defaults", func(*RunInput) {}, func(t *testing.T, s RunSpec) {
			if s.Arch != ArchX64 || s.Base != BaseNoble || s.KeepRevisions != 5 || s.Visibility != VisibilityPrivate || s.Builder != BuilderOpenStack {
				t.Errorf("got %+v", s)
			}
			if got := s.PublishClouds(); !slices.Equal(got, []string{"build"}) {
				t.Errorf("PublishClouds = %v, want the build cloud", got)
			}
		}},
		{"latest", func(in *RunInput) { in.RunnerVersion, in.RunnerSHA256 = "latest", "" }, func(t *testing.T, s RunSpec) {
			if s.RunnerVersion != "" {
				t.Errorf("RunnerVersion = %q, want \"\" for latest", s.RunnerVersion)
			}
		}},
		{"uppercase sha", func(in *RunInput) { in.RunnerSHA256 = strings.ToUpper(testSHA) }, func(t *testing.T, s RunSpec) {
			if s.RunnerSHA256 != testSHA {
				t.Errorf("RunnerSHA256 = %q, want it lowercased", s.RunnerSHA256)
			}
		}},
		{"upload list trimmed", func(in *RunInput) { in.UploadClouds = " a , b,c " }, func(t *testing.T, s RunSpec) {
			if want := []string{"a", "b", "c"}; !slices.Equal(s.UploadClouds, want) || !slices.Equal(s.PublishClouds(), want) {
				t.Errorf("UploadClouds = %q, want %q", s.UploadClouds, want)
			}
		}},
		{"armhf on resolute", func(in *RunInput) { in.Arch, in.Base = "armhf", "26.04" }, func(t *testing.T, s RunSpec) {
			if s.Arch != ArchARM || s.Base != BaseResolute {
				t.Errorf("got %s on %s", s.Arch, s.Base)
			}
		}},
		{"empty prefix", func(in *RunInput) { in.Prefix = "" }, func(*testing.T, RunSpec) {}},
		{"proxy ip", func(in *RunInput) { in.Proxy = "10.0.0.1:3128" }, func(*testing.T, RunSpec) {}},
		{"script http", func(in *RunInput) { in.ScriptURL = "http://127.0.0.1:8080/s.sh" }, func(*testing.T, RunSpec) {}},
		{"api url https", func(in *RunInput) { in.RunnerAPIURL = "https://ghe.example.com/api/v3" }, func(*testing.T, RunSpec) {}},
		{"api url http on 127.0.0.1", func(in *RunInput) { in.RunnerAPIURL = "http://127.0.0.1:8080" }, func(*testing.T, RunSpec) {}},
		{"api url http on 127.1.2.3", func(in *RunInput) { in.RunnerAPIURL = "http://127.1.2.3/api" }, func(*testing.T, RunSpec) {}},
		{"api url http on ::1", func(in *RunInput) { in.RunnerAPIURL = "http://[::1]:8080/" }, func(*testing.T, RunSpec) {}},
		{"api url http on localhost", func(in *RunInput) { in.RunnerAPIURL = "http://LocalHost:8080/" }, func(*testing.T, RunSpec) {}},
		{"visibility any case", func(in *RunInput) { in.Visibility = "Community" }, func(t *testing.T, s RunSpec) {
			if s.Visibility != VisibilityCommunity {
				t.Errorf("Visibility = %q", s.Visibility)
			}
		}},
		{"dry run needs no cloud", func(in *RunInput) { in.Cloud, in.DryRun = "", true }, func(*testing.T, RunSpec) {}},
		{"local builder", func(in *RunInput) { in.Builder, in.Output, in.Cloud, in.Isolated = "LOCAL", "/tmp/x.qcow2", "", true }, func(t *testing.T, s RunSpec) {
			if s.Builder != BuilderLocal || len(s.PublishClouds()) != 0 {
				t.Errorf("got builder %q, publish %v", s.Builder, s.PublishClouds())
			}
		}},
		{"local armhf on arm64 host", func(in *RunInput) {
			in.Builder, in.Output, in.Arch, in.HostArch = "local", "/x", "arm", ArchARM64
		}, func(*testing.T, RunSpec) {}},
		{"secrets and token", func(in *RunInput) {
			in.Environ = []string{"PATH=/bin", SecretEnvPrefix + "TOKEN=s3cret", SecretEnvPrefix + "B=x=y", TokenEnv + "=ghp_1"}
		}, func(t *testing.T, s RunSpec) {
			if len(s.Secrets) != 2 || s.Secrets["TOKEN"].Reveal() != "s3cret" || s.Secrets["B"].Reveal() != "x=y" {
				t.Errorf("Secrets = %v", s.SecretNames())
			}
			if !slices.Equal(s.SecretNames(), []string{"B", "TOKEN"}) {
				t.Errorf("SecretNames = %v", s.SecretNames())
			}
			if s.GitHubToken.Reveal() != "ghp_1" {
				t.Error("GITHUB_TOKEN not read")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := goodInput()
			tt.change(&in)
			s, err := NewRunSpec(in)
			if err != nil {
				t.Fatalf("NewRunSpec: %v", err)
			}
			tt.check(t, s)
			if err := s.Validate(); err != nil {
				t.Errorf("Validate of NewRunSpec's result: %v", err)
			}
		})
	}
}

func TestArchAndBaseSpellings(t *testing.T) {
	for typed, want := range map[string]Arch{
		"x64": ArchX64, "amd64": ArchX64, "x86_64": ArchX64, "AMD64": ArchX64,
		"arm64": ArchARM64, "aarch64": ArchARM64, "s390x": ArchS390X,
		"ppc64le": ArchPPC64LE, "ppc64el": ArchPPC64LE, "arm": ArchARM, "armhf": ArchARM,
	} {
		in := goodInput()
		in.Arch = typed
		s, err := NewRunSpec(in)
		if err != nil || s.Arch != want {
			t.Errorf("--arch %s: got %q, %v; want %q", typed, s.Arch, err, want)
		}
	}
	for typed, want := range map[string]Base{
		"focal": BaseFocal, "20.04": BaseFocal, "jammy": BaseJammy, "22.04": BaseJammy,
		"noble": BaseNoble, "24.04": BaseNoble, "resolute": BaseResolute, "26.04": BaseResolute, "Noble": BaseNoble,
	} {
		in := goodInput()
		in.Base = typed
		s, err := NewRunSpec(in)
		if err != nil || s.Base != want {
			t.Errorf("--base-image %s: got %q, %v; want %q", typed, s.Base, err, want)
		}
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	const value = "hunter2-very-secret"
	in := goodInput()
	in.Environ = []string{SecretEnvPrefix + "PW=" + value, TokenEnv + "=" + value}
	s, err := NewRunSpec(in)
	if err != nil {
		t.Fatal(err)
	}
	var logBuf bytes.Buffer
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("spec", "spec", s, "token", s.GitHubToken)
	slog.New(slog.NewTextHandler(&logBuf, nil)).Info("spec", "spec", s, "token", s.GitHubToken)
	js, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"%v": fmt.Sprintf("%v", s), "%+v": fmt.Sprintf("%+v", s), "%#v": fmt.Sprintf("%#v", s),
		"%s": fmt.Sprintf("%s", s.Secrets), "json": string(js), "slog": logBuf.String(),
	}
	for how, out := range outputs {
		if strings.Contains(out, value) {
			t.Errorf("%s printed the secret: %s", how, out)
		}
		if !strings.Contains(out, redacted) {
			t.Errorf("%s shows no redaction marker: %s", how, out)
		}
	}
}

func TestParseBaseList(t *testing.T) {
	tests := []struct {
		in      []string
		want    []Base
		wantErr string
	}{
		{nil, Bases(), ""},
		{[]string{"noble"}, []Base{BaseNoble}, ""},
		{[]string{"jammy,24.04", "focal"}, []Base{BaseJammy, BaseNoble, BaseFocal}, ""},
		{[]string{"noble,"}, nil, "empty item"},
		{[]string{"noble", "24.04"}, nil, "listed twice"},
		{[]string{"xenial"}, nil, "--base-image"},
	}
	for _, tt := range tests {
		got, err := ParseBaseList("--base-image", tt.in)
		if tt.wantErr != "" {
			if !errs.Is(err, errs.KindUsage) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseBaseList(%q) = %v, want usage error with %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ParseBaseList(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestBasesFor(t *testing.T) {
	if got := BasesFor(ArchARM); !slices.Equal(got, []Base{BaseNoble, BaseResolute}) {
		t.Errorf("BasesFor(arm) = %v", got)
	}
	if got := BasesFor(ArchX64); !slices.Equal(got, Bases()) {
		t.Errorf("BasesFor(x64) = %v", got)
	}
}

func TestInitSweepLatestValidate(t *testing.T) {
	goodInit := InitSpec{Cloud: "c", Arch: ArchX64, Bases: Bases(), Builder: BuilderOpenStack, CacheDir: "/cache"}
	tests := []struct {
		name string
		err  error
		want string // "" means valid
	}{
		{"init ok", goodInit.Validate(), ""},
		{"init local no cloud", func() error { s := goodInit; s.Cloud, s.Builder = "", BuilderLocal; return s.Validate() }(), ""},
		{"init no cloud", func() error { s := goodInit; s.Cloud = ""; return s.Validate() }(), "--os-cloud"},
		{"init no arch", func() error { s := goodInit; s.Arch = ""; return s.Validate() }(), "--arch is required"},
		{"init armhf focal", func() error { s := goodInit; s.Arch = ArchARM; return s.Validate() }(), "--base-image focal: arch arm needs noble"},
		{"init mirror", func() error { s := goodInit; s.BaseImageURL = "file:///x"; return s.Validate() }(), "--base-image-url"},
		{"init prefix", func() error { s := goodInit; s.Prefix = "_x"; return s.Validate() }(), "--prefix"},
		{"init cache", func() error { s := goodInit; s.CacheDir = ""; return s.Validate() }(), "--cache-dir"},
		{"sweep ok", SweepSpec{Cloud: "c", Prefix: "p", OlderThan: time.Hour}.Validate(), ""},
		{"sweep young", SweepSpec{Cloud: "c", Prefix: "p", OlderThan: time.Second}.Validate(), "--older-than"},
		{"sweep no cloud", SweepSpec{Prefix: "p", OlderThan: time.Hour}.Validate(), "--os-cloud"},
		{"sweep prefix", SweepSpec{Cloud: "c", Prefix: "a b", OlderThan: time.Hour}.Validate(), "--prefix"},
		{"latest ok", LatestQuery{Cloud: "c", ImageName: "x"}.Validate(), ""},
		{"latest no cloud", LatestQuery{ImageName: "x"}.Validate(), "--os-cloud"},
		{"latest bad name", LatestQuery{Cloud: "c", ImageName: "a\nb"}.Validate(), "IMAGE_NAME"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.want == "" {
				if tt.err != nil {
					t.Fatalf("unexpected error: %v", tt.err)
				}
				return
			}
			if !errs.Is(tt.err, errs.KindUsage) || !strings.Contains(tt.err.Error(), tt.want) {
				t.Fatalf("got %v, want a usage error containing %q", tt.err, tt.want)
			}
		})
	}
}

func TestDirs(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	tests := []struct {
		name   string
		env    map[string]string
		prefix string
		cache  string
		state  string
	}{
		{"xdg", map[string]string{"XDG_CACHE_HOME": "/c", "XDG_STATE_HOME": "/s", "HOME": "/h"}, "p",
			"/c/" + AppName, "/s/" + AppName + "/p"},
		{"home", map[string]string{"HOME": "/h"}, "",
			"/h/.cache/" + AppName, "/h/.local/state/" + AppName + "/_empty"},
		{"relative xdg ignored", map[string]string{"XDG_CACHE_HOME": "c", "XDG_STATE_HOME": "s", "HOME": "/h"}, "p",
			"/h/.cache/" + AppName, "/h/.local/state/" + AppName + "/p"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := CacheDir(env(tt.env))
			if err != nil || c != filepath.FromSlash(tt.cache) {
				t.Errorf("CacheDir = %q, %v; want %q", c, err, tt.cache)
			}
			s, err := StateDir(env(tt.env), tt.prefix)
			if err != nil || s != filepath.FromSlash(tt.state) {
				t.Errorf("StateDir = %q, %v; want %q", s, err, tt.state)
			}
		})
	}
	if _, err := CacheDir(env(nil)); !errs.Is(err, errs.KindUsage) {
		t.Errorf("CacheDir without HOME: %v, want a usage error", err)
	}
	// A prefix is a directory name: one that would leave the state base is refused.
	for _, prefix := range []string{"../etc", "a/b", ".."} {
		if s, err := StateDir(env(map[string]string{"HOME": "/h"}), prefix); !errs.Is(err, errs.KindUsage) {
			t.Errorf("StateDir(%q) = %q, %v; want a usage error", prefix, s, err)
		}
	}
}

func TestHostArch(t *testing.T) {
	for goarch, want := range map[string]Arch{"amd64": ArchX64, "arm64": ArchARM64, "s390x": ArchS390X, "ppc64le": ArchPPC64LE, "riscv64": "", "386": ""} {
		if got := HostArch(goarch); got != want {
			t.Errorf("HostArch(%q) = %q, want %q", goarch, got, want)
		}
	}
}

// The fuzz tests check the parsers of outside text: they never panic, and
// what they accept is well formed.

func FuzzParseCloudList(f *testing.F) {
	for _, s := range []string{"", "a", "a,b", " a , b ", "a,,b", "a,a", "a,\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseCloudList("--upload-clouds", s)
		if err != nil {
			if !errs.Is(err, errs.KindUsage) || strings.ContainsAny(err.Error(), "\n") && !strings.Contains(s, "\n") {
				t.Fatalf("error %v is not a one-line usage error", err)
			}
			return
		}
		for i, c := range got {
			if c == "" || strings.Contains(c, ",") || strings.TrimSpace(c) != c || slices.Contains(got[:i], c) {
				t.Fatalf("ParseCloudList(%q) accepted %q", s, got)
			}
		}
	})
}

func FuzzValidateProxy(f *testing.F) {
	for _, s := range []string{"", "squid:3128", "10.0.0.1:8080", "http://x:1", "[::1]:3128", "a:0", "a:99999", "a:b:c", "a b:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if err := ValidateProxy(s); err != nil {
			if !errs.Is(err, errs.KindUsage) {
				t.Fatalf("ValidateProxy(%q) = %v, not a usage error", s, err)
			}
			return
		}
		if s == "" {
			return
		}
		// What is accepted is safe to put in a shell word and an nft rule.
		if strings.ContainsAny(s, " \t\n'\"$`\\;&|/@[]") {
			t.Fatalf("ValidateProxy accepted %q", s)
		}
	})
}

func FuzzSecretsFromEnv(f *testing.F) {
	f.Add(SecretEnvPrefix + "A=1")
	f.Add(SecretEnvPrefix + "=1")
	f.Add("PATH=/bin")
	f.Add(SecretEnvPrefix + "A-B=x")
	f.Fuzz(func(t *testing.T, kv string) {
		got, err := SecretsFromEnv([]string{kv})
		if err != nil {
			k, v, _ := strings.Cut(kv, "=")
			if !errs.Is(err, errs.KindUsage) || len(v) >= 4 && !strings.Contains(k, v) && strings.Contains(err.Error(), v) {
				t.Fatalf("error %v: not a usage error, or it shows the value", err)
			}
			return
		}
		for name := range got {
			if !secretNameRE.MatchString(name) {
				t.Fatalf("accepted secret name %q", name)
			}
		}
	})
}

func FuzzValidateHTTPURL(f *testing.F) {
	for _, s := range []string{"https://example.com/x.sh", "http://127.0.0.1:8080/", "ftp://x", "https://u:p@x/", "x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := ValidateHTTPURL("--script-url", s, false)
		if err != nil {
			if !errs.Is(err, errs.KindUsage) {
				t.Fatalf("not a usage error: %v", err)
			}
			return
		}
		if !strings.HasPrefix(strings.ToLower(s), "http://") && !strings.HasPrefix(strings.ToLower(s), "https://") {
			t.Fatalf("accepted %q", s)
		}
	})
}
