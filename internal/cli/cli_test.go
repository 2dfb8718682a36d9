package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/runner-image-builder/github-runner-image-builder/internal/build"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/recipe"
	"github.com/runner-image-builder/github-runner-image-builder/internal/release"
)

var update = flag.Bool("update", false, "rewrite the golden files and the README's exit-code table")

const (
	pinnedVersion = "2.330.0"
	pinnedSHA     = "9f5d0cd7e4ac1f2a6b3c8e7d6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b"
	// deadAPI is a loopback address nothing listens on: a test that reaches
	// it fails, which proves pinned runs fetch nothing.
	deadAPI = "http://127.0.0.1:9"
)

// testEnv is a fixed environment so that outputs do not depend on the host.
func testEnv(extra ...string) []string {
	return append([]string{"HOME=/home/tester", "XDG_STATE_HOME=/state", "XDG_CACHE_HOME=/cache"}, extra...)
}

type result struct {
	code           int
	stdout, stderr string
}

func runApp(t *testing.T, env []string, backend Backend, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	app := &App{Stdout: &out, Stderr: &errOut, Environ: env, Backend: backend, GOARCH: "amd64"}
	code := app.Main(t.Context(), args)
	return result{code, out.String(), errOut.String()}
}

// pinned are the flags of an offline run.
func pinned(args ...string) []string {
	return append(args, "--runner-version", pinnedVersion, "--runner-sha256", pinnedSHA, "--runner-api-url", deadAPI)
}

// checkUsage asserts exit 2, nothing on stdout, and one "Error:" line that contains want.
func checkUsage(t *testing.T, r result, want string) {
	t.Helper()
	if r.code != 2 {
		t.Errorf("exit code %d, want 2 (stderr %q)", r.code, r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("stdout %q, want nothing", r.stdout)
	}
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "Error: ") || !strings.HasSuffix(r.stderr, "\n") {
		t.Fatalf("stderr is not one \"Error: \" line: %q", r.stderr)
	}
	if !strings.Contains(lines[0], want) {
		t.Errorf("stderr %q does not contain %q", lines[0], want)
	}
}

func TestBadInputExitsTwo(t *testing.T) {
	userData := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(userData, bytes.Repeat([]byte("x"), build.MaxUserData+1), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  []string
		args []string
		want string
	}{
		// cobra's own errors
		{"unknown command", nil, []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"unknown flag", nil, []string{"run", "x", "--arch", "x64", "--bogus"}, "--bogus"},
		{"no command", nil, nil, "give a command"},
		{"run no image", nil, []string{"run", "--arch", "x64"}, "run: give exactly one IMAGE_NAME"},
		{"run two images", nil, []string{"run", "a", "b", "--arch", "x64"}, "IMAGE_NAME"},
		{"keep not a number", nil, []string{"run", "x", "--arch", "x64", "-k", "five"}, "--keep-revisions"},
		{"bad duration", nil, []string{"run", "x", "--arch", "x64", "--boot-timeout", "20"}, "--boot-timeout"},
		{"bool with value", nil, []string{"run", "x", "--arch", "x64", "--dry-run=maybe"}, "--dry-run"},
		{"flag without value", nil, []string{"run", "x", "--arch"}, "--arch"},
		{"latest no image", nil, []string{"--os-cloud", "c", "latest-build-id"}, "latest-build-id: give exactly one IMAGE_NAME"},
		{"init takes no args", nil, []string{"init", "x64"}, "unknown command"},
		// root flags
		{"log level", nil, pinned("--log-level", "verbose", "run", "x", "--arch", "x64", "--dry-run"), "--log-level"},
		{"log level number", nil, pinned("--log-level", "50", "run", "x", "--arch", "x64", "--dry-run"), "--log-level"},
		{"log format", nil, pinned("--log-format", "xml", "run", "x", "--arch", "x64", "--dry-run"), "--log-format"},
		{"log file dir", nil, pinned("--log-file", t.TempDir(), "run", "x", "--arch", "x64", "--dry-run"), "--log-file"},
		// run
		{"run no arch", nil, pinned("run", "x", "--dry-run"), "--arch is required"},
		{"run bad arch", nil, pinned("run", "x", "--arch", "mips", "--dry-run"), "--arch"},
		{"run bad base", nil, pinned("run", "x", "--arch", "x64", "-b", "bionic", "--dry-run"), "--base-image"},
		{"run armhf jammy", nil, pinned("run", "x", "--arch", "armhf", "-b", "jammy", "--dry-run"), "--base-image jammy: arch arm needs noble or resolute"},
		{"run keep 0", nil, pinned("run", "x", "--arch", "x64", "-k", "0", "--dry-run"), "--keep-revisions 0"},
		{"run version", nil, []string{"run", "x", "--arch", "x64", "--runner-version", "2.330", "--dry-run"}, "--runner-version"},
		{"run sha", nil, []string{"run", "x", "--arch", "x64", "--runner-version", "2.330.0", "--runner-sha256", "abc", "--dry-run"}, "--runner-sha256"},
		{"run proxy scheme", nil, pinned("run", "x", "--arch", "x64", "--proxy", "http://squid:3128", "--dry-run"), "--proxy"},
		{"run proxy port", nil, pinned("run", "x", "--arch", "x64", "--proxy", "squid", "--dry-run"), "--proxy"},
		{"run script url", nil, pinned("run", "x", "--arch", "x64", "--script-url", "example.com/s.sh", "--dry-run"), "--script-url"},
		{"run image name", nil, pinned("run", strings.Repeat("n", 256), "--arch", "x64", "--dry-run"), "IMAGE_NAME"},
		{"run prefix", nil, pinned("run", "x", "--arch", "x64", "--prefix", "a b", "--dry-run"), "--prefix"},
		{"run upload clouds", nil, pinned("run", "x", "--arch", "x64", "--upload-clouds", "a,,b", "--dry-run"), "--upload-clouds"},
		{"run upload dup", nil, pinned("run", "x", "--arch", "x64", "--upload-clouds", "a,a", "--dry-run"), "--upload-clouds"},
		{"run visibility", nil, pinned("run", "x", "--arch", "x64", "--visibility", "open", "--dry-run"), "--visibility"},
		{"run builder", nil, pinned("run", "x", "--arch", "x64", "--builder", "lxd", "--dry-run"), "--builder"},
		{"run format", nil, pinned("run", "x", "--arch", "x64", "--format", "yaml", "--dry-run"), "--format"},
		{"run timeout 0", nil, pinned("run", "x", "--arch", "x64", "--ssh-timeout", "0s", "--dry-run"), "--ssh-timeout"},
		{"run repo", nil, pinned("run", "x", "--arch", "x64", "--runner-repo", "runner", "--dry-run"), "--runner-repo"},
		{"run api url", nil, []string{"run", "x", "--arch", "x64", "--runner-api-url", "api.github.com", "--dry-run"}, "--runner-api-url"},
		{"run output openstack", nil, pinned("run", "x", "--arch", "x64", "--output", "/tmp/x", "--dry-run"), "--output"},
		{"run local wrong arch", nil, pinned("run", "x", "--arch", "s390x", "--builder", "local", "--dry-run"), "--builder local"},
		{"run user-data missing", nil, pinned("run", "x", "--arch", "x64", "--user-data", "/nonexistent/ud", "--dry-run"), "--user-data"},
		{"run user-data big", nil, pinned("run", "x", "--arch", "x64", "--user-data", userData, "--dry-run"), "--user-data"},
		{"run verify-script missing", nil, pinned("run", "x", "--arch", "x64", "--verify-script", "/nonexistent/v", "--dry-run"), "--verify-script"},
		{"run secret name", []string{"IMAGE_BUILDER_SECRET_A.B=1"}, pinned("run", "x", "--arch", "x64", "--dry-run"), "IMAGE_BUILDER_SECRET_A.B"},
		{"run needs cloud", nil, pinned("run", "x", "--arch", "x64"), "--os-cloud"},
		// init
		{"init no arch", nil, []string{"--os-cloud", "c", "init"}, "--arch is required"},
		{"init bad arch", nil, []string{"--os-cloud", "c", "init", "--arch", "i686"}, "--arch"},
		{"init no cloud", nil, []string{"init", "--arch", "x64"}, "--os-cloud"},
		{"init base", nil, []string{"--os-cloud", "c", "init", "--arch", "x64", "-b", "noble,xenial"}, "--base-image"},
		{"init armhf focal", nil, []string{"--os-cloud", "c", "init", "--arch", "arm", "-b", "focal"}, "--base-image focal: arch arm needs noble"},
		{"init prefix", nil, []string{"--os-cloud", "c", "init", "--arch", "x64", "--prefix", "-x"}, "--prefix"},
		{"init mirror", nil, []string{"--os-cloud", "c", "init", "--arch", "x64", "--base-image-url", "cloud-images"}, "--base-image-url"},
		{"init builder", nil, []string{"--os-cloud", "c", "init", "--arch", "x64", "--builder", "x"}, "--builder"},
		// latest-build-id
		{"latest no cloud", nil, []string{"latest-build-id", "x"}, "--os-cloud"},
		{"latest name", nil, []string{"--os-cloud", "c", "latest-build-id", "a\x01b"}, "IMAGE_NAME"},
		{"latest format", nil, []string{"--os-cloud", "c", "latest-build-id", "x", "--format", "csv"}, "--format"},
		// sweep
		{"sweep no prefix", nil, []string{"--os-cloud", "c", "sweep"}, "--prefix is required"},
		{"sweep young", nil, []string{"--os-cloud", "c", "sweep", "--prefix", "p", "--older-than", "10s"}, "--older-than"},
		{"sweep no cloud", nil, []string{"sweep", "--prefix", "p"}, "--os-cloud"},
		{"sweep prefix", nil, []string{"--os-cloud", "c", "sweep", "--prefix", "p/q"}, "--prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkUsage(t, runApp(t, testEnv(tt.env...), Backend{}, tt.args...), tt.want)
		})
	}
}

func TestAcceptedSpellings(t *testing.T) {
	tests := [][]string{
		{"run", "x", "--arch", "x64"}, {"run", "x", "--arch", "amd64"}, {"run", "x", "--arch", "X86_64"},
		{"run", "x", "--arch", "arm64", "-b", "jammy"}, {"run", "x", "--arch", "aarch64"},
		{"run", "x", "--arch", "s390x", "-b", "22.04"}, {"run", "x", "--arch", "ppc64le"}, {"run", "x", "--arch", "ppc64el"},
		{"run", "x", "--arch", "arm"}, {"run", "x", "--arch", "armhf", "--base-image", "26.04"},
		{"run", "x", "--arch", "x64", "-b", "focal"}, {"run", "x", "--arch", "x64", "-b", "20.04"},
		{"run", "x", "--arch", "x64", "-b", "noble"}, {"run", "x", "--arch", "x64", "-b", "resolute"},
		{"--log-level", "DEBUG", "run", "x", "--arch", "x64"}, {"--log-level", "10", "run", "x", "--arch", "x64"},
		{"--log-level", "Warning", "run", "x", "--arch", "x64"}, {"--log-level", "40", "run", "x", "--arch", "x64"},
		{"--log-format", "json", "run", "x", "--arch", "x64"},
		{"run", "x", "--arch", "x64", "-k", "1", "--proxy", "squid.internal:3128", "--script-url", "https://example.com/s.sh",
			"--upload-clouds", " a , b ", "--visibility", "public", "--format", "JSON", "--prefix", "p.1_x-y"},
		{"run", "x", "--arch", "x64", "--builder", "local", "--isolated", "--output", "/tmp/out.qcow2"},
	}
	for _, args := range tests {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			full := pinned(append(args, "--dry-run")...)
			r := runApp(t, testEnv(), Backend{}, full...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			if !strings.Contains(r.stdout, "#!/bin/bash") {
				t.Errorf("no user-data on stdout: %q", r.stdout)
			}
		})
	}
}

func TestHelpExplainsEveryFlag(t *testing.T) {
	app := &App{Environ: testEnv()}
	root := app.Command()
	cmds := append([]*cobra.Command{root}, root.Commands()...)
	for _, c := range cmds {
		if c.Name() == "help" {
			continue
		}
		t.Run(c.Name(), func(t *testing.T) {
			var args []string
			if c != root {
				args = append(args, c.Name())
			}
			r := runApp(t, testEnv(), Backend{}, append(args, "--help")...)
			if r.code != 0 || r.stderr != "" {
				t.Fatalf("--help: exit %d, stderr %q", r.code, r.stderr)
			}
			check := func(f *pflag.Flag) {
				if !strings.Contains(r.stdout, "--"+f.Name+" ") {
					t.Errorf("--help does not show --%s", f.Name)
				}
				if f.Shorthand != "" && !strings.Contains(r.stdout, "-"+f.Shorthand+", --"+f.Name) {
					t.Errorf("--help does not show -%s for --%s", f.Shorthand, f.Name)
				}
				if f.Name != "help" && len(f.Usage) < 20 {
					t.Errorf("--%s has no real explanation: %q", f.Name, f.Usage)
				}
			}
			c.Flags().VisitAll(check)
			c.InheritedFlags().VisitAll(check)
		})
	}
	// The Python tool's flags, by name, must all exist.
	for cmd, flags := range map[string][]string{
		"":                {"os-cloud", "log-level"},
		"init":            {"arch", "prefix"},
		"run":             {"arch", "base-image", "keep-revisions", "runner-version", "flavor", "network", "prefix", "proxy", "script-url", "upload-clouds"},
		"latest-build-id": {"any-status"},
	} {
		c := root
		if cmd != "" {
			var err error
			if c, _, err = root.Find([]string{cmd}); err != nil {
				t.Fatal(err)
			}
		}
		for _, name := range flags {
			if c.Flags().Lookup(name) == nil && c.InheritedFlags().Lookup(name) == nil && c.PersistentFlags().Lookup(name) == nil {
				t.Errorf("%q has no --%s", cmd, name)
			}
		}
	}
}

func goldenCompare(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the output (go test -update rewrites it); got:\n%s", path, got)
	}
}

func TestDryRunGolden(t *testing.T) {
	secretEnv := []string{"IMAGE_BUILDER_SECRET_API_KEY=do-not-print-me", "GITHUB_TOKEN=ghp_do-not-print-me"}
	tests := []struct {
		golden string
		env    []string
		args   []string
	}{
		{"dryrun-openstack.txt", secretEnv, pinned("--os-cloud", "build", "run", "p-noble-x64", "--arch", "amd64",
			"--prefix", "p", "-k", "3", "--upload-clouds", "east,west", "--proxy", "squid.internal:3128",
			"--script-url", "https://example.com/setup.sh?token=do-not-print-me",
			"--ssh-jump", "bastion@127.0.0.1:2222", "--ssh-jump-known-hosts", "testdata/jump_known_hosts", "--dry-run")},
		{"dryrun-openstack.json", secretEnv, pinned("run", "img", "--arch", "arm", "-b", "resolute", "--format", "json",
			"--script-url", "https://example.com/s/do-not-print-me/setup.sh", "--user-data", "testdata/userdata.sh", "--flavor", "builder", "--network", "net", "--dry-run")},
		{"dryrun-local.txt", nil, pinned("run", "img", "--arch", "x64", "--builder", "local", "--isolated",
			"--output", "/tmp/img.qcow2", "--user-data", "testdata/userdata.sh", "--boot-timeout", "90s", "--dry-run")},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			env := testEnv(append(tt.env, "OS_CLOUD=from-env")...)
			r := runApp(t, env, Backend{}, tt.args...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			for _, out := range []string{r.stdout, r.stderr} {
				if strings.Contains(out, "do-not-print-me") {
					t.Errorf("a secret was printed: %s", out)
				}
			}
			goldenCompare(t, tt.golden, []byte(r.stdout))
		})
	}
}

// The built-in recipe in the plan is exactly what recipe.Render gives.
func TestDryRunPrintsTheRecipe(t *testing.T) {
	r := runApp(t, testEnv(), Backend{}, pinned("run", "x", "--arch", "s390x", "-b", "jammy", "--format", "json", "--dry-run")...)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var p Plan
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
		t.Fatal(err)
	}
	rel := release.Release{Repo: p.Runner.Repo, Version: p.Runner.Version, Arch: config.Arch(p.Runner.Arch), URL: p.Runner.URL, SHA256: p.Runner.SHA256}
	want, err := recipe.Render(recipe.Params{Arch: config.ArchS390X, Base: config.BaseJammy, Runner: rel})
	if err != nil {
		t.Fatal(err)
	}
	if p.UserData != string(want) || p.Runner.Version != pinnedVersion || p.Runner.SHA256 != pinnedSHA {
		t.Errorf("plan user-data or runner differs from recipe.Render: runner %+v", p.Runner)
	}
}

// Without a pinned version the release is looked up at --runner-api-url,
// for --runner-repo, with GITHUB_TOKEN.
func TestDryRunResolvesFromAPI(t *testing.T) {
	const sha = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	var gotPath, gotAuth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath, gotAuth = r.URL.Path, r.Header.Get("Authorization")
		fmt.Fprintf(w, `{"tag_name":"v2.331.0","body":"<!-- BEGIN SHA linux-x64 -->%s<!-- END SHA linux-x64 -->",
			"assets":[{"name":"actions-runner-linux-x64-2.331.0.tar.gz","browser_download_url":"http://127.0.0.1/r.tgz"}]}`, sha)
	}))
	defer srv.Close()
	r := runApp(t, testEnv("GITHUB_TOKEN=tok-123"), Backend{}, "run", "x", "--arch", "x64", "--runner-version", "latest",
		"--runner-repo", "me/runner", "--runner-api-url", srv.URL, "--format", "json", "--dry-run")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if gotPath != "/repos/me/runner/releases/latest" || gotAuth != "Bearer tok-123" {
		t.Errorf("request path %q, auth %q", gotPath, gotAuth)
	}
	if strings.Contains(r.stdout+r.stderr, "tok-123") {
		t.Error("the token was printed")
	}
	var p Plan
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
		t.Fatal(err)
	}
	if p.Runner.Version != "2.331.0" || p.Runner.SHA256 != sha || p.Runner.URL != "http://127.0.0.1/r.tgz" {
		t.Errorf("runner %+v", p.Runner)
	}
}

func TestWriteRunResult(t *testing.T) {
	imgs := []config.PublishedImage{
		{Cloud: "west", ID: "id-w", Name: "img", Checksum: "sha256:bb"},
		{Cloud: "east", ID: "id-e", Name: "img", Checksum: "sha256:aa"},
	}
	tests := []struct {
		name    string
		format  Format
		clouds  []string
		imgs    []config.PublishedImage
		want    string
		wantErr string
	}{
		{"text in upload order", FormatText, []string{"east", "west"}, imgs, "Image build success:\nid-e,id-w", ""},
		{"text other order", FormatText, []string{"west", "east"}, imgs, "Image build success:\nid-w,id-e", ""},
		{"single", FormatText, []string{"build"}, []config.PublishedImage{{Cloud: "build", ID: "snap"}}, "Image build success:\nsnap", ""},
		{"json", FormatJSON, []string{"east", "west"}, imgs, `{
  "images": [
    {
      "cloud": "east",
      "id": "id-e",
      "name": "img",
      "checksum": "sha256:aa"
    },
    {
      "cloud": "west",
      "id": "id-w",
      "name": "img",
      "checksum": "sha256:bb"
    }
  ]
}
`, ""},
		{"missing cloud", FormatText, []string{"east", "north"}, imgs, "", `no image for cloud "north"`},
		{"too few", FormatText, []string{"east", "west", "north"}, imgs, "", "2 images for 3 clouds"},
		{"duplicate", FormatText, []string{"east", "west"}, []config.PublishedImage{{Cloud: "east", ID: "a"}, {Cloud: "east", ID: "b"}}, "", "two images"},
		{"bad id", FormatText, []string{"east"}, []config.PublishedImage{{Cloud: "east", ID: "a,b"}}, "", "unusable image ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			err := WriteRunResult(&b, tt.format, tt.clouds, tt.imgs, "")
			if tt.wantErr != "" {
				if !errs.Is(err, errs.KindInternal) || !strings.Contains(err.Error(), tt.wantErr) || b.Len() != 0 {
					t.Fatalf("got %v, output %q; want an internal error with %q and no output", err, b.String(), tt.wantErr)
				}
				return
			}
			if err != nil || b.String() != tt.want {
				t.Fatalf("got %q, %v; want %q", b.String(), err, tt.want)
			}
		})
	}
}

// The charm parses `stdout.split()[-1].split(",")`: earlier stdout noise
// must not change the IDs it gets.
func TestRunCallsBackendAndPrintsIDs(t *testing.T) {
	var gotSpec config.RunSpec
	var gotUserData []byte
	backend := Backend{Builds: fakeBuilds(func(_ context.Context, log *slog.Logger, spec config.RunSpec, rel release.Release, ud []byte) ([]config.PublishedImage, error) {
		gotSpec, gotUserData = spec, ud
		return []config.PublishedImage{{Cloud: "b", ID: "22"}, {Cloud: "a", ID: "11"}}, nil
	})}
	r := runApp(t, testEnv("IMAGE_BUILDER_SECRET_PW=s3"), backend,
		pinned("--os-cloud", "build", "run", "img", "--arch", "x64", "--upload-clouds", "a,b")...)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if r.stdout != "Image build success:\n11,22" {
		t.Errorf("stdout %q", r.stdout)
	}
	fields := strings.Fields(r.stdout)
	if got := strings.Split(fields[len(fields)-1], ","); !slices.Equal(got, []string{"11", "22"}) {
		t.Errorf("the charm would parse %q", got)
	}
	if gotSpec.Cloud != "build" || gotSpec.Secrets["PW"].Reveal() != "s3" || !bytes.HasPrefix(gotUserData, []byte("#!/bin/bash")) {
		t.Errorf("backend got cloud %q, secrets %v, user-data %.20q", gotSpec.Cloud, gotSpec.SecretNames(), gotUserData)
	}
}

// Images published before pruning failed (or was interrupted) stay and
// are printed: the exit code says what went wrong after publishing.
func TestRunPrintsImagesPublishedBeforeAFailure(t *testing.T) {
	for _, tt := range []struct {
		kind errs.Kind
		want int
	}{{errs.KindPartial, 10}, {errs.KindInterrupted, 130}} {
		backend := Backend{Builds: fakeBuilds(func(context.Context, *slog.Logger, config.RunSpec, release.Release, []byte) ([]config.PublishedImage, error) {
			return []config.PublishedImage{{Cloud: "a", ID: "11"}}, errs.New(tt.kind, "old revisions were not all pruned")
		})}
		r := runApp(t, testEnv(), backend, pinned("--os-cloud", "a", "run", "img", "--arch", "x64", "--upload-clouds", "a")...)
		if r.code != tt.want || r.stdout != "Image build success:\n11" || !strings.Contains(r.stderr, "not all pruned") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d, the image on stdout and the error", tt.kind, r.code, r.stdout, r.stderr, tt.want)
		}
	}
}

func TestExitCodesOfBackendErrors(t *testing.T) {
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want int
	}{
		{"build failed", t.Context(), errs.New(errs.KindBuild, "cloud-init failed"), 6},
		{"not found", t.Context(), fmt.Errorf("flavor: %w", errs.New(errs.KindNotFound, "no flavor x")), 5},
		{"unclassified", t.Context(), fmt.Errorf("boom"), 1},
		{"interrupted", canceled, errs.New(errs.KindBuild, "waiting for cloud-init: context canceled"), 130},
		{"canceled", t.Context(), context.Canceled, 130},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			backend := Backend{LatestBuildID: func(context.Context, *slog.Logger, config.LatestQuery) (string, error) {
				return "", tt.err
			}}
			var out, errOut bytes.Buffer
			app := &App{Stdout: &out, Stderr: &errOut, Environ: testEnv(), Backend: backend}
			if code := app.Main(tt.ctx, []string{"--os-cloud", "c", "latest-build-id", "x"}); code != tt.want {
				t.Errorf("exit %d, want %d (stderr %q)", code, tt.want, errOut.String())
			}
			if lines := strings.Count(errOut.String(), "\n"); lines != 1 || !strings.HasPrefix(errOut.String(), "Error: ") {
				t.Errorf("stderr %q is not one Error line", errOut.String())
			}
		})
	}
}

func TestNotImplemented(t *testing.T) {
	for _, args := range [][]string{
		pinned("--os-cloud", "c", "run", "x", "--arch", "x64"),
		{"--os-cloud", "c", "init", "--arch", "x64"},
		{"--os-cloud", "c", "latest-build-id", "x"},
		{"--os-cloud", "c", "sweep", "--prefix", "p"},
	} {
		r := runApp(t, testEnv(), Backend{}, args...)
		if r.code != 1 || !strings.Contains(r.stderr, "not implemented yet") {
			t.Errorf("%v: exit %d, stderr %q; want 1 and not implemented", args, r.code, r.stderr)
		}
	}
}

func TestLatestBuildIDOutput(t *testing.T) {
	tests := []struct {
		id, format, want string
	}{
		{"abc-123", "text", "abc-123"},
		{"", "text", ""},
		{"abc", "json", "{\n  \"cloud\": \"c\",\n  \"name\": \"img\",\n  \"id\": \"abc\"\n}\n"},
	}
	for _, tt := range tests {
		var gotQ config.LatestQuery
		backend := Backend{LatestBuildID: func(_ context.Context, _ *slog.Logger, q config.LatestQuery) (string, error) {
			gotQ = q
			return tt.id, nil
		}}
		r := runApp(t, testEnv("OS_CLOUD=c"), backend, "latest-build-id", "img", "--any-status", "--format", tt.format)
		if r.code != 0 || r.stdout != tt.want {
			t.Errorf("id %q %s: exit %d, stdout %q; want %q", tt.id, tt.format, r.code, r.stdout, tt.want)
		}
		if gotQ.Cloud != "c" || gotQ.ImageName != "img" || !gotQ.AnyStatus {
			t.Errorf("query %+v", gotQ)
		}
	}
}

func TestInitAndSweepReachBackend(t *testing.T) {
	var gotInit config.InitSpec
	var gotSweep config.SweepSpec
	backend := Backend{
		Init: func(_ context.Context, _ *slog.Logger, s config.InitSpec) error { gotInit = s; return nil },
		Sweep: func(_ context.Context, _ *slog.Logger, s config.SweepSpec) ([]config.SweptResource, error) {
			gotSweep = s
			return []config.SweptResource{{Kind: "server", Name: "p-image-builder-noble-x64", ID: "9"}}, nil
		},
	}
	r := runApp(t, testEnv(), backend, "--os-cloud", "c", "init", "--arch", "armhf")
	if r.code != 0 || !slices.Equal(gotInit.Bases, []config.Base{config.BaseNoble, config.BaseResolute}) ||
		gotInit.CacheDir != "/cache/github-runner-image-builder" || gotInit.Builder != config.BuilderOpenStack {
		t.Errorf("init: exit %d (%s), spec %+v", r.code, r.stderr, gotInit)
	}
	r = runApp(t, testEnv(), backend, "init", "--arch", "x64", "-b", "jammy", "-b", "24.04,focal", "--builder", "local", "--cache-dir", "/c")
	if r.code != 0 || !slices.Equal(gotInit.Bases, []config.Base{config.BaseJammy, config.BaseNoble, config.BaseFocal}) || gotInit.CacheDir != "/c" {
		t.Errorf("init local: exit %d (%s), spec %+v", r.code, r.stderr, gotInit)
	}
	r = runApp(t, testEnv(), backend, "--os-cloud", "c", "sweep", "--prefix", "", "--older-than", "2h", "--dry-run")
	if r.code != 0 || r.stdout != "would remove server p-image-builder-noble-x64 9\n" || gotSweep.Prefix != "" || !gotSweep.DryRun {
		t.Errorf("sweep: exit %d (%s), stdout %q, spec %+v", r.code, r.stderr, r.stdout, gotSweep)
	}
}

func TestLogging(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "grib.log")
	args := pinned("--log-file", logFile, "--log-format", "json", "--log-level", "debug", "run", "x", "--arch", "x64", "--dry-run")
	for range 2 { // appended, not truncated
		if r := runApp(t, testEnv(), Backend{}, args...); r.code != 0 || !strings.Contains(r.stderr, `"msg":"runner release pinned`) {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
	}
	st, err := os.Stat(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("--log-file mode %v, want 0600", st.Mode().Perm())
	}
	data, _ := os.ReadFile(logFile)
	if n := strings.Count(string(data), "runner release pinned"); n != 2 {
		t.Errorf("log file has %d runs, want 2 (appended):\n%s", n, data)
	}
	// error level hides info lines; stdout never carries logs.
	r := runApp(t, testEnv(), Backend{}, pinned("--log-level", "ERROR", "run", "x", "--arch", "x64", "--dry-run")...)
	if r.code != 0 || r.stderr != "" || strings.Contains(r.stdout, "level=") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestParseLogLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{
		"debug": slog.LevelDebug, "DEBUG": slog.LevelDebug, "10": slog.LevelDebug, "info": slog.LevelInfo, "20": slog.LevelInfo,
		"warning": slog.LevelWarn, "WARNING": slog.LevelWarn, "warn": slog.LevelWarn, "30": slog.LevelWarn,
		"error": slog.LevelError, "Error": slog.LevelError, "40": slog.LevelError,
	} {
		if got, err := ParseLogLevel(in); err != nil || got != want {
			t.Errorf("ParseLogLevel(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}

// The README's exit-code table is generated from internal/errs and lists
// every kind's code.
func TestReadmeExitCodes(t *testing.T) {
	const begin, end = "<!-- exit-codes:begin -->\n", "<!-- exit-codes:end -->"
	path := filepath.Join("..", "..", "README.md")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	i, j := strings.Index(readme, begin), strings.Index(readme, end)
	if i < 0 || j < i {
		t.Fatalf("README.md has no %q ... %q section", begin, end)
	}
	table := ExitCodeTable()
	if *update {
		if err := os.WriteFile(path, []byte(readme[:i+len(begin)]+table+readme[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if got := readme[i+len(begin) : j]; got != table {
		t.Errorf("README exit-code table is stale (go test ./internal/cli -run Readme -update); want:\n%s", table)
	}
	for _, k := range errs.Kinds() {
		if row := fmt.Sprintf("| %d | `%s` |", k.ExitCode(), k); !strings.Contains(readme, row) || strings.Contains(table, "(undocumented)") {
			t.Errorf("README lacks a documented row %q", row)
		}
	}
}
