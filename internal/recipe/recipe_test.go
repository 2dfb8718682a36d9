package recipe

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/release"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

const testSHA = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func params(a config.Arch, b config.Base, proxy string) Params {
	return Params{Arch: a, Base: b, Proxy: proxy, Runner: release.Release{
		Repo: "canonical/github-actions-runner", Version: "2.330.0", Arch: a, SHA256: testSHA,
		URL: "https://github.com/canonical/github-actions-runner/releases/download/v2.330.0/" +
			release.TarballName(a, "2.330.0"),
	}}
}

type pair struct {
	arch config.Arch
	base config.Base
}

func validPairs() []pair {
	var ps []pair
	for _, b := range config.Bases() {
		for _, a := range config.Arches() {
			if b.SupportsArch(a) {
				ps = append(ps, pair{a, b})
			}
		}
	}
	return ps
}

// goldenCases: one rendering per valid pair, plus proxy variants.
func goldenCases() map[string]Params {
	cases := map[string]Params{}
	for _, p := range validPairs() {
		cases[fmt.Sprintf("%s-%s.sh", p.base, p.arch)] = params(p.arch, p.base, "")
	}
	cases["focal-x64-proxy.sh"] = params(config.ArchX64, config.BaseFocal, "squid.internal:3128")
	cases["noble-arm-proxy.sh"] = params(config.ArchARM, config.BaseNoble, "10.1.2.3:8080")
	return cases
}

func TestGolden(t *testing.T) {
	dir := filepath.Join("testdata", "golden")
	cases := goldenCases()
	if len(cases) != 20 {
		t.Fatalf("expected 18 valid pairs + 2 proxy cases, got %d", len(cases))
	}
	for name, p := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := Render(p)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, name)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./internal/recipe -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("rendering differs from %s (run go test ./internal/recipe -update and review the diff)", path)
			}
		})
	}
	// No stale golden files.
	files, _ := filepath.Glob(filepath.Join(dir, "*.sh"))
	for _, f := range files {
		if _, ok := cases[filepath.Base(f)]; !ok {
			t.Errorf("stale golden file %s", f)
		}
	}
}

// functionBody returns the text of the bash function name in script.
func functionBody(t *testing.T, script, name string) string {
	t.Helper()
	_, rest, ok := strings.Cut(script, "\n"+name+"() {\n")
	if !ok {
		return ""
	}
	body, _, ok := strings.Cut(rest, "\n}\n")
	if !ok {
		t.Fatalf("function %s is not closed", name)
	}
	return body
}

// TestInventoryItems maps every item of inventory §3 (the Python recipe's
// steps) and §3.1 (its package lists) to the rendered script, for every
// valid pair: each step must be in the function that main calls, and be
// absent where it does not apply.
func TestInventoryItems(t *testing.T) {
	isARM := func(a config.Arch, _ config.Base) bool { return a == config.ArchARM }
	always := func(config.Arch, config.Base) bool { return true }
	steps := []struct {
		item     string // inventory reference
		function string
		applies  func(config.Arch, config.Base) bool
		lines    []string
	}{
		{"§3.1 hostname", "set_hostname", always, []string{"hostnamectl set-hostname github-runner"}},
		{"§3.2 aproxy snap (edge)", "configure_proxy", always, []string{"retry snap install aproxy --edge"}},
		{"§3.2 focal nftables", "configure_proxy", func(_ config.Arch, b config.Base) bool { return b == config.BaseFocal },
			[]string{"apt_get install --no-install-recommends nftables"}},
		{"§3.3 armhf multiarch", "enable_armhf_multiarch", isARM, []string{
			"dpkg --add-architecture armhf",
			`sed -i "/^Types:/a Architectures: ${NATIVE_ARCH}" "${sources}"`,
			"/etc/apt/sources.list.d/armhf-ports.sources",
			"URIs: http://ports.ubuntu.com/ubuntu-ports",
			"Suites: ${BASE} ${BASE}-updates ${BASE}-security",
			"Components: main restricted universe multiverse",
			"Architectures: armhf",
			"Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg",
			"/etc/cloud/cloud.cfg.d/99-armhf-preserve-apt-sources.cfg",
			"preserve_sources_list: true",
		}},
		{"§3.4 focal GitHub CLI repository", "install_apt_packages", func(_ config.Arch, b config.Base) bool { return b == config.BaseFocal }, []string{
			"retry download https://cli.github.com/packages/githubcli-archive-keyring.gpg /etc/apt/keyrings/githubcli-archive-keyring.gpg",
			"https://cli.github.com/packages stable main",
		}},
		{"§3.4 resolute dotnet backports", "install_apt_packages", func(_ config.Arch, b config.Base) bool { return b == config.BaseResolute },
			[]string{"retry add-apt-repository -y ppa:dotnet/backports"}},
		{"§3.4 apt update, upgrade, install", "install_apt_packages", always, []string{
			"retry apt_get update", "retry apt_get upgrade",
			`retry apt_get install --no-install-recommends "${APT_PACKAGES[@]}"`,
		}},
		{"§3.5 unattended upgrades off", "disable_unattended_upgrades", always, []string{
			"apt-daily.timer apt-daily.service apt-daily-upgrade.timer apt-daily-upgrade.service",
			`systemctl disable --now "${unit}"`,
			"retry apt_get remove unattended-upgrades",
		}},
		{"§3.6 fq and bbr", "enable_network_fair_queuing_congestion", always, []string{
			"net.core.default_qdisc=fq", "net.ipv4.tcp_congestion_control=bbr", "sysctl -p",
		}},
		{"§3.7 /usr/local/bin", "configure_usr_local_bin", always, []string{"chmod 777 /usr/local/bin"}},
		{"§3.8 yarn", "install_yarn", func(_ config.Arch, b config.Base) bool { return b != config.BaseFocal },
			[]string{"retry npm install --global yarn", "npm cache clean --force"}},
		{"§3.9 yq pinned", "install_yq", always, []string{
			`retry download "${YQ_URL}" "${dir}/yq"`, "sha384sum -c --strict -", "install -m 0755 \"${dir}/yq\" /usr/bin/yq",
		}},
		{"§3.10 opentelemetry collector", "install_opentelemetry_collector", always, []string{
			"retry snap install opentelemetry-collector --stable", "snap disable opentelemetry-collector",
		}},
		{"§3.11 runner with checksum", "install_github_runner", always, []string{
			`retry download "${RUNNER_URL}" "${tarball}"`,
			`echo "${RUNNER_SHA256}  ${tarball}" | sha256sum -c --strict -`,
			`tar -xzf "${tarball}" -C "${RUNNER_DIR}"`,
		}},
		{"§3.12 chown", "install_github_runner", always, []string{"chown --recursive ubuntu:ubuntu /home/ubuntu/"}},
		{"§3.13 users, linger, GARM alias", "configure_system_users", always, []string{
			"useradd --create-home --shell /bin/bash ubuntu",
			`line="PATH=\$PATH:/home/ubuntu/.local/bin"`,
			"/home/ubuntu/.profile /home/ubuntu/.bashrc",
			"groupadd -f microk8s", "groupadd -f docker",
			"usermod --append --groups docker,microk8s,lxd,sudo ubuntu",
			"loginctl enable-linger ubuntu",
			`useradd --non-unique --uid "$(id -u ubuntu)" --gid "$(id -g ubuntu)" --home-dir /home/ubuntu`,
			"--groups docker,microk8s,lxd,sudo runner",
			"/home/runner is a non-empty directory",
			"ln -sfnT /home/ubuntu /home/runner",
		}},
		{"§3.14 rustup for armhf", "configure_rustup", isARM, []string{"retry sudo -H -u ubuntu rustup default stable"}},
		{"better: caches and logs cleaned", "clean_up", always, []string{
			"apt-get clean", "rm -rf /var/lib/apt/lists/*", "find /var/log -type f", "journalctl --vacuum-time=1s",
		}},
	}
	for _, p := range validPairs() {
		t.Run(fmt.Sprintf("%s-%s", p.base, p.arch), func(t *testing.T) {
			out, err := Render(params(p.arch, p.base, ""))
			if err != nil {
				t.Fatal(err)
			}
			script := string(out)
			main := functionBody(t, script, "main")
			for _, s := range steps {
				body := functionBody(t, script, s.function)
				called := slices.Contains(strings.Split(main, "\n"), "\t"+s.function)
				if !s.applies(p.arch, p.base) {
					shared := s.function == "configure_proxy" || s.function == "install_apt_packages"
					if called && !shared {
						t.Errorf("%s: main calls %s where it does not apply", s.item, s.function)
					}
					for _, l := range s.lines {
						if strings.Contains(body, l) {
							t.Errorf("%s: %q rendered where it does not apply", s.item, l)
						}
					}
					continue
				}
				if body == "" || !called {
					t.Errorf("%s: function %s missing or not called from main", s.item, s.function)
					continue
				}
				for _, l := range s.lines {
					if !strings.Contains(body, l) {
						t.Errorf("%s: %s lacks %q", s.item, s.function, l)
					}
				}
			}
			// §3.1: every package of the arch's list, in the APT_PACKAGES array.
			arr, _, _ := strings.Cut(strings.SplitN(script, "readonly APT_PACKAGES=(\n", 2)[1], "\n)\n")
			var rendered []string
			for _, l := range strings.Split(arr, "\n") {
				rendered = append(rendered, strings.Trim(strings.TrimSpace(l), "'"))
			}
			if want := wantPackages(p.arch, p.base); !slices.Equal(sorted(rendered), sorted(want)) {
				t.Errorf("APT_PACKAGES = %v, want %v", rendered, want)
			}
			// The runner release is in the script, and nothing secret-looking is.
			for _, s := range []string{"readonly RUNNER_VERSION='2.330.0'", "readonly RUNNER_SHA256='" + testSHA + "'"} {
				if !strings.Contains(script, s) {
					t.Errorf("script lacks %q", s)
				}
			}
			if regexp.MustCompile(`(?i)secret|password|token`).MatchString(script) {
				t.Error("script mentions a secret, password or token")
			}
		})
	}
}

// wantPackages spells inventory §3.1 out independently of Packages.
func wantPackages(a config.Arch, b config.Base) []string {
	def := []string{"build-essential", "cargo", "docker.io", "gh", "jq", "npm", "pkg-config",
		"python-is-python3", "python3-dev", "python3-pip", "rustc", "shellcheck", "socat", "tar",
		"time", "unzip", "wget"}
	switch a {
	case config.ArchS390X, config.ArchPPC64LE:
		return append(def, "dotnet-runtime-8.0")
	case config.ArchARM:
		var out []string
		for _, p := range def {
			if p != "cargo" && p != "rustc" {
				out = append(out, p)
			}
		}
		icu := map[config.Base]string{config.BaseNoble: "libicu74:armhf", config.BaseResolute: "libicu78:armhf"}[b]
		return append(out, "libc6:armhf", "libatomic1:armhf", "rustup", "docker-buildx", icu)
	default:
		return def
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestPackagesInvalidPairs(t *testing.T) {
	for _, tt := range []pair{{config.ArchARM, config.BaseFocal}, {config.ArchARM, config.BaseJammy}, {"mips", config.BaseNoble}, {config.ArchX64, "bionic"}} {
		if got := Packages(tt.arch, tt.base); got != nil {
			t.Errorf("Packages(%s, %s) = %v, want nil", tt.arch, tt.base, got)
		}
	}
}

func TestRenderProxy(t *testing.T) {
	tests := []struct {
		name, proxy string
		present     []string
		absent      []string
	}{
		{"no proxy", "", []string{"retry snap install aproxy --edge"}, []string{"nft -f", "snap set aproxy", "PROXY=", "with_proxy"}},
		{"proxy", "squid.internal:3128", []string{
			"readonly PROXY='squid.internal:3128'",
			"readonly NO_PROXY_NETS='127.0.0.1,localhost,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16'",
			`snap set system proxy.http="http://${PROXY}" proxy.https="http://${PROXY}"`,
			`snap set system proxy.http="" proxy.https=""`,
			"ip daddr != { 10.0.0.0/8, 127.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 } tcp dport { 80, 443 } dnat to ${default_ip}:8444",
			`snap set aproxy proxy="${PROXY}" listen=:8444`,
			"retry with_proxy apt_get install --no-install-recommends nftables",
			"wait_for_aproxy",
		}, []string{"192.168.0.0/1,", "192.168.0.0/1'", "sleep 5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := Render(params(config.ArchX64, config.BaseFocal, tt.proxy))
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tt.present {
				if !bytes.Contains(out, []byte(s)) {
					t.Errorf("script lacks %q", s)
				}
			}
			for _, s := range tt.absent {
				if bytes.Contains(out, []byte(s)) {
					t.Errorf("script contains %q", s)
				}
			}
		})
	}
}

func TestRenderRejects(t *testing.T) {
	mod := func(f func(*Params)) Params {
		p := params(config.ArchX64, config.BaseNoble, "")
		f(&p)
		return p
	}
	tests := []struct {
		name string
		p    Params
		kind errs.Kind
		want string
	}{
		{"armhf on focal", params(config.ArchARM, config.BaseFocal, ""), errs.KindUsage, "noble"},
		{"armhf on jammy", params(config.ArchARM, config.BaseJammy, ""), errs.KindUsage, "noble"},
		{"unknown arch", mod(func(p *Params) { p.Arch, p.Runner.Arch = "amd64", "amd64" }), errs.KindUsage, "--arch"},
		{"unknown base", mod(func(p *Params) { p.Base = "bionic" }), errs.KindUsage, "--base-image"},
		{"runner for another arch", mod(func(p *Params) { p.Runner.Arch = config.ArchARM64 }), errs.KindInternal, "arm64"},
		{"bad version", mod(func(p *Params) { p.Runner.Version = "latest" }), errs.KindUsage, "--runner-version"},
		{"bad sha", mod(func(p *Params) { p.Runner.SHA256 = "abc" }), errs.KindUsage, "--runner-sha256"},
		{"quote in url", mod(func(p *Params) { p.Runner.URL = "https://x/'a" }), errs.KindUsage, "URL"},
		{"file url", mod(func(p *Params) { p.Runner.URL = "file:///tmp/r.tar.gz" }), errs.KindUsage, "URL"},
		{"url with credentials", mod(func(p *Params) { p.Runner.URL = "https://me:hunter2@mirror.internal/r.tar.gz" }), errs.KindUsage, "credentials"},
		{"proxy with scheme", mod(func(p *Params) { p.Proxy = "http://squid:3128" }), errs.KindUsage, "--proxy"},
		{"proxy without port", mod(func(p *Params) { p.Proxy = "squid" }), errs.KindUsage, "--proxy"},
		{"proxy port 0", mod(func(p *Params) { p.Proxy = "squid:0" }), errs.KindUsage, "--proxy"},
		{"proxy shell", mod(func(p *Params) { p.Proxy = "a$(reboot):1" }), errs.KindUsage, "--proxy"},
		{"proxy ipv6", mod(func(p *Params) { p.Proxy = "[::1]:3128" }), errs.KindUsage, "IPv6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := Render(tt.p)
			if err == nil {
				t.Fatalf("Render succeeded:\n%s", out)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error leaks a credential: %v", err)
			}
			if errs.KindOf(err) != tt.kind || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v (kind %v), want kind %v mentioning %q", err, errs.KindOf(err), tt.kind, tt.want)
			}
		})
	}
}

// The pinned yq checksums must be real SHA-384 values (96 hex digits),
// one distinct value per yq binary: a placeholder fails here.
func TestYQPins(t *testing.T) {
	hex96 := regexp.MustCompile(`^[0-9a-f]{96}$`)
	seen := map[string]string{}
	for _, a := range config.Arches() {
		asset, sum := YQBinary(a)
		if !strings.HasPrefix(asset, "yq_linux_") || !hex96.MatchString(sum) {
			t.Errorf("YQBinary(%s) = %q, %q: want a yq_linux_* asset and a 96-hex SHA-384", a, asset, sum)
		}
		if prev, ok := seen[sum]; ok && prev != asset {
			t.Errorf("%s and %s share checksum %s", prev, asset, sum)
		}
		seen[sum] = asset
	}
	if len(seen) != 4 {
		t.Errorf("want 4 distinct yq binaries (amd64, arm64, s390x, ppc64le), got %v", seen)
	}
}

// Every rendering passes shellcheck. Under CI shellcheck must be installed.
func TestShellcheck(t *testing.T) {
	bin, err := exec.LookPath("shellcheck")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("shellcheck is not installed (apt-get install -y shellcheck)")
		}
		t.Skip("shellcheck is not installed")
	}
	for name, p := range goldenCases() {
		t.Run(name, func(t *testing.T) {
			out, err := Render(p)
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, "--shell=bash", "--severity=style", "-")
			cmd.Stdin = bytes.NewReader(out)
			if msg, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("shellcheck: %v\n%s", err, msg)
			}
		})
	}
}

// bash -n parses every rendering (cheap, and catches template slips).
func TestBashSyntax(t *testing.T) {
	for name, p := range goldenCases() {
		out, err := Render(p)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("bash", "-n")
		cmd.Stdin = bytes.NewReader(out)
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: bash -n: %v\n%s", name, err, msg)
		}
	}
}

func FuzzValidateProxy(f *testing.F) {
	for _, s := range []string{"squid.internal:3128", "10.0.0.1:8080", "", "a:b", "[::1]:80", "x'y:1"} {
		f.Add(s)
	}
	safe := regexp.MustCompile(`^[A-Za-z0-9.-]+:[0-9]+$`)
	f.Fuzz(func(t *testing.T, proxy string) {
		if ValidateProxy(proxy) != nil || proxy == "" {
			return
		}
		if !safe.MatchString(proxy) {
			t.Fatalf("accepted proxy %q has characters unsafe in a script", proxy)
		}
		out, err := Render(params(config.ArchX64, config.BaseJammy, proxy))
		if err != nil {
			t.Fatalf("Render with accepted proxy %q: %v", proxy, err)
		}
		if !bytes.Contains(out, []byte("readonly PROXY='"+proxy+"'\n")) {
			t.Fatalf("proxy %q not rendered as one quoted word", proxy)
		}
	})
}
