package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/runner-image-builder/github-runner-image-builder/internal/build"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
	"github.com/runner-image-builder/github-runner-image-builder/internal/release"
)

type runFlags struct {
	in     config.RunInput
	format string
}

func (inv *invocation) runCommand() *cobra.Command {
	var f runFlags
	f.in.Timeouts = config.DefaultTimeouts()
	cmd := &cobra.Command{
		Use:   "run IMAGE_NAME",
		Short: "Build a runner image and publish it as IMAGE_NAME",
		Long: `Build a runner image: boot a builder from the base image with the recipe as
user-data, wait for cloud-init, run --script-url's script (secrets from the
IMAGE_BUILDER_SECRET_* environment variables, the prefix removed), verify,
snapshot, copy to --upload-clouds and prune old revisions.

On success stdout ends with exactly "Image build success:", a newline and the
image IDs, comma-separated, in --upload-clouds order (the build cloud's
snapshot when there are none), with no trailing newline. A local build first
prints "Image file: PATH" (the absolute --output); without --upload-clouds
PATH also stands in place of the IDs.

The GitHub token for release look-ups is read from GITHUB_TOKEN, never a flag.
With --runner-version and --runner-sha256 both given nothing is fetched, so
--dry-run works offline.`,
		Args: exactlyOne("IMAGE_NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return inv.run(cmd.Context(), args[0], f)
		},
	}
	fl := cmd.Flags()
	fl.SortFlags = false
	in := &f.in
	fl.StringVar(&in.Arch, "arch", "", "runner architecture (required): x64|amd64|x86_64, arm64|aarch64, s390x, ppc64le|ppc64el, arm|armhf (arm needs noble or later)")
	fl.StringVarP(&in.Base, "base-image", "b", string(config.DefaultBase), "Ubuntu base: focal|20.04, jammy|22.04, noble|24.04, resolute|26.04")
	fl.IntVarP(&in.KeepRevisions, "keep-revisions", "k", config.DefaultKeepRevisions, "revisions of IMAGE_NAME to keep in each cloud, the new one included (1 to 99)")
	fl.StringVar(&in.RunnerVersion, "runner-version", "", "runner version X.Y.Z, e.g. 2.330.0; empty or latest for the newest release")
	fl.StringVar(&in.RunnerSHA256, "runner-sha256", "", "pin the runner tarball's SHA-256 (64 hex digits) instead of reading it from the release")
	fl.StringVar(&in.RunnerRepo, "runner-repo", config.DefaultRunnerRepo, "GitHub owner/name whose releases hold the runner tarballs")
	fl.StringVar(&in.RunnerAPIURL, "runner-api-url", config.DefaultRunnerAPIURL, "GitHub REST API for the release look-up (https; http only on loopback)")
	fl.StringVar(&in.Flavor, "flavor", "", "flavor name or ID of the builder; empty picks the smallest with 2 vCPU, 1 GiB RAM, 20 GiB disk")
	fl.StringVar(&in.Network, "network", "", "network name or ID of the builder; empty picks one that has a subnet")
	fl.StringVar(&in.Prefix, "prefix", "", "prefix of the builder's resource names, for parallel builds in one project")
	fl.StringVar(&in.Proxy, "proxy", "", "HTTP proxy host:port (no scheme) for the builder's outbound traffic")
	fl.StringVar(&in.HostProxy.HTTP, "host-http-proxy", "", "this host's proxy (http://HOST:PORT) for its own http:// requests; default: $http_proxy")
	fl.StringVar(&in.HostProxy.HTTPS, "host-https-proxy", "", "this host's proxy (http://HOST:PORT) for its own https:// requests; default: $https_proxy")
	fl.StringVar(&in.HostProxy.NoProxy, "host-no-proxy", "", "with --host-http(s)-proxy: hosts this host reaches directly (no_proxy syntax)")
	fl.StringVar(&in.ScriptURL, "script-url", "", "http(s) URL of a script run as root in the builder after cloud-init")
	fl.StringVar(&in.UploadClouds, "upload-clouds", "", "comma-separated clouds.yaml names to copy the image to; empty keeps it in the build cloud only")
	fl.StringVar(&in.DiskFormat, "disk-format", "", "Glance disk format of the copies: qcow2 or raw (converted on this host with qemu-img); empty keeps the built image's")
	fl.StringArrayVar(&in.UploadDiskFormats, "upload-disk-format", nil, "CLOUD=FORMAT: this upload cloud's copies in FORMAT (qcow2 or raw) instead of --disk-format; repeatable")
	fl.StringVar(&in.ScratchDir, "scratch-dir", "", "directory for the downloaded snapshot and the converted copies (default $TMPDIR)")
	fl.StringVar(&f.format, "format", "text", "output format: text or json (json gives each cloud's image ID, name, checksum and disk format)")
	fl.BoolVar(&in.DryRun, "dry-run", false, "print the rendered user-data and every resource name the build would create; touch no cloud")
	fl.StringVar(&in.UserDataFile, "user-data", "", "boot with this file as user-data instead of the built-in recipe")
	fl.StringVar(&in.VerifyScriptFile, "verify-script", "", "also run this script in the builder before publishing; non-zero exit publishes nothing")
	fl.BoolVar(&in.SkipDefaultChecks, "skip-default-checks", false, "with --user-data: skip the built-in checks (runner, docker, gh, yq, runner user); verify with --verify-script only")
	fl.StringVar(&in.Visibility, "visibility", string(config.VisibilityPrivate), "Glance visibility of the published images: private, shared, community or public")
	fl.BoolVar(&in.AdoptUnmarked, "adopt-unmarked", false, "let pruning also delete images of IMAGE_NAME published by the Python tool (migration)")
	fl.DurationVar(&in.Timeouts.Boot, "boot-timeout", in.Timeouts.Boot, "deadline for the builder to boot (Go duration, e.g. 20m)")
	fl.DurationVar(&in.Timeouts.SSH, "ssh-timeout", in.Timeouts.SSH, "deadline for the first SSH connection to the builder")
	fl.DurationVar(&in.Timeouts.CloudInit, "cloud-init-timeout", in.Timeouts.CloudInit, "deadline for cloud-init (the recipe) to finish")
	fl.DurationVar(&in.Timeouts.Script, "script-timeout", in.Timeouts.Script, "deadline for --script-url's script")
	fl.DurationVar(&in.Timeouts.Snapshot, "snapshot-timeout", in.Timeouts.Snapshot, "deadline for the snapshot to become active")
	fl.DurationVar(&in.Timeouts.Copy, "copy-timeout", in.Timeouts.Copy, "deadline for copying the image to the --upload-clouds")
	fl.BoolVar(&in.InsecureSkipHostKeyCheck, "insecure-skip-host-key-check", false, "RISK: trust the builder's SSH host key without checking it against the console")
	fl.BoolVar(&in.KeepOnFailure, "keep-on-failure", false, "debugging: leave the builder (server or local VM) running when the build fails and print how to reach and remove it")
	fl.StringVar(&in.SSHJump.Host, "ssh-jump", "", "reach the builder's SSH through this jump host, user@host[:port] (as OpenSSH's ProxyJump)")
	fl.StringVar(&in.SSHJump.Key, "ssh-jump-key", "", "with --ssh-jump: the jump host's private key file (mode 0600); default: the SSH agent at $SSH_AUTH_SOCK")
	fl.StringVar(&in.SSHJump.KnownHosts, "ssh-jump-known-hosts", "", "with --ssh-jump (required): known_hosts file holding the jump host's key; it is never trusted blindly")
	fl.BoolVar(&in.ZeroFreeSpace, "zero-free-space", false, "zero the guest's free space before power-off, for disks that do not pass discards (reads and writes the whole free space once)")
	fl.StringVar(&in.Builder, "builder", string(config.BuilderOpenStack), "where to build: openstack (a server in --os-cloud) or local (qemu on this host)")
	fl.StringVar(&in.Output, "output", "", "local builder: write the qcow2 image to this path")
	fl.BoolVar(&in.Isolated, "isolated", false, "local builder: the guest reaches nothing but what the builder forwards on loopback")
	fl.StringVar(&in.BaseImageFile, "base-image-file", "", "local builder: boot this image file (qcow2 or raw) instead of the cached Ubuntu base image")
	fl.StringVar(&in.BaseImageSHA256, "base-image-sha256", "", "local builder: expected SHA-256 of --base-image-file (or of the mirror's image)")
	fl.StringVar(&in.BaseImageURL, "base-image-url", "", "local builder: mirror of https://cloud-images.ubuntu.com/ to fetch a base image missing from the cache")
	fl.StringVar(&in.BaseImageSerial, "base-image-serial", "", "local builder: dated serial of the base image, e.g. 20251113 (default current)")
	fl.StringVar(&in.CacheDir, "cache-dir", "", "local builder: where verified base images are kept (default $XDG_CACHE_HOME/github-runner-image-builder)")
	return cmd
}

// run turns the flags into a validated request and either prints the
// plan (dry run) or hands it to the build, printing what it published.
func (inv *invocation) run(ctx context.Context, imageName string, f runFlags) error {
	format, err := ParseFormat(f.format)
	if err != nil {
		return err
	}
	in := f.in
	in.ImageName, in.Cloud, in.Environ = imageName, inv.cloud(), inv.app.Environ
	in.HostArch = config.HostArch(inv.goarch())
	spec, err := config.NewRunSpec(in)
	if err != nil {
		return err
	}
	if spec, err = inv.withHostDefaults(spec); err != nil {
		return err
	}
	if spec.DryRun {
		job, err := inv.builds().Prepare(ctx, inv.logger(), spec)
		if err != nil {
			return err
		}
		plan, err := inv.plan(spec, job.Runner, job.UserData)
		if err != nil {
			return err
		}
		return WritePlan(inv.app.Stdout, format, plan)
	}
	inv.quietForProgress() // phase lines on a terminal instead of the info log
	res, err := inv.builds().Run(ctx, inv.logger(), spec, nil)
	writeKept(inv.app.Stderr, err)
	if err != nil && len(res.Images) == 0 {
		return err
	}
	// Published images are printed even when pruning or a cleanup failed
	// afterwards (exit 10) or was interrupted (exit 130): they stay, and
	// consumers may use them.
	var output string
	if spec.Builder == config.BuilderLocal {
		// Where the local builder wrote the image (it takes the same Abs).
		output = spec.Output
		if abs, aerr := filepath.Abs(spec.Output); aerr == nil {
			output = abs
		}
	}
	if werr := WriteRunResult(inv.app.Stdout, format, spec.PublishClouds(), res.Images, output); werr != nil {
		return werr
	}
	return err
}

// builds is the Backend's build runner (a zero one, which can still
// prepare a dry run, when none is wired).
func (inv *invocation) builds() *build.Builds {
	if inv.app.Backend.Builds == nil {
		return &build.Builds{}
	}
	return inv.app.Backend.Builds
}

// withHostDefaults completes a validated request with what this host
// decides: where clouds.yaml is looked up, and the local builder's cache.
func (inv *invocation) withHostDefaults(spec config.RunSpec) (config.RunSpec, error) {
	var err error
	if spec.CloudsPaths == nil {
		if spec.CloudsPaths, err = openstack.CloudsPaths(inv.getenv); err != nil {
			return spec, err
		}
	}
	if spec.Builder == config.BuilderLocal && spec.CacheDir == "" && spec.BaseImageFile == "" {
		if spec.CacheDir, err = config.CacheDir(inv.getenv); err != nil {
			return spec, err
		}
	}
	return spec, nil
}

// Plan is what `run --dry-run` prints: every resource the build would
// create or publish, and the user-data it would boot with.
type Plan struct {
	Builder       config.BuilderKind `json:"builder"`
	Cloud         string             `json:"cloud"`
	Arch          config.Arch        `json:"arch"`
	Base          config.Base        `json:"base"`
	BaseImage     string             `json:"base_image,omitempty"`
	BuilderServer string             `json:"builder_server,omitempty"`
	Keypair       string             `json:"keypair,omitempty"`
	SecurityGroup string             `json:"security_group,omitempty"`
	StateDir      string             `json:"state_dir"`
	Output        string             `json:"output,omitempty"`
	Flavor        string             `json:"flavor"`
	Network       string             `json:"network"`
	SSHJump       string             `json:"ssh_jump,omitempty"` // user@host[:port]; "": direct
	Runner        RunnerPlan         `json:"runner"`
	Proxy         string             `json:"proxy"`
	ScriptURL     string             `json:"script_url"`
	SecretNames   []string           `json:"secret_names"`
	Images        []PlannedImage     `json:"images"`
	KeepRevisions int                `json:"keep_revisions"`
	Visibility    config.Visibility  `json:"visibility"`
	Timeouts      map[string]string  `json:"timeouts"`
	UserDataFrom  string             `json:"user_data_from"`
	UserData      string             `json:"user_data"`
}

// RunnerPlan is the runner release the recipe installs (empty fields
// when --user-data replaces the recipe and nothing was pinned).
type RunnerPlan struct {
	Repo    string `json:"repo"`
	Version string `json:"version"`
	Arch    string `json:"arch"`
	URL     string `json:"url"`
	SHA256  string `json:"sha256"`
}

// PlannedImage is an image the build would publish.
type PlannedImage struct {
	Cloud string `json:"cloud"`
	Name  string `json:"name"`
}

const notSet = "(not set)"

func (inv *invocation) plan(spec config.RunSpec, runner release.Release, userData []byte) (Plan, error) {
	stateDir, err := config.StateDir(inv.getenv, spec.Prefix)
	if err != nil {
		return Plan{}, err
	}
	scriptURL := ""
	if spec.ScriptURL != "" {
		scriptURL = config.RedactedURL(spec.ScriptURL) // as the logs show it: the path or query may carry a token
	}
	p := Plan{
		Builder: spec.Builder, Cloud: spec.Cloud, Arch: spec.Arch, Base: spec.Base,
		StateDir: stateDir, Output: spec.Output, Flavor: spec.Flavor, Network: spec.Network, SSHJump: spec.SSHJump.Host,
		Runner: RunnerPlan{Repo: runner.Repo, Version: runner.Version, Arch: string(runner.Arch), URL: runner.URL, SHA256: runner.SHA256},
		Proxy:  spec.Proxy, ScriptURL: scriptURL, SecretNames: spec.SecretNames(),
		KeepRevisions: spec.KeepRevisions, Visibility: spec.Visibility,
		Timeouts: map[string]string{
			"boot": shortDuration(spec.Timeouts.Boot), "ssh": shortDuration(spec.Timeouts.SSH),
			"cloud_init": shortDuration(spec.Timeouts.CloudInit), "script": shortDuration(spec.Timeouts.Script),
			"snapshot": shortDuration(spec.Timeouts.Snapshot), "copy": shortDuration(spec.Timeouts.Copy),
		},
		UserDataFrom: "built-in recipe",
		UserData:     string(userData),
	}
	if spec.UserDataFile != "" {
		p.UserDataFrom = spec.UserDataFile
	}
	if spec.Builder == config.BuilderOpenStack {
		p.BaseImage = config.BaseImageName(spec.Prefix, spec.Base, spec.Arch)
		p.BuilderServer = config.BuilderName(spec.Prefix, spec.Base, spec.Arch)
		p.Keypair = config.KeypairName(spec.Prefix)
		p.SecurityGroup = config.SecurityGroupName(spec.Prefix)
	}
	for _, c := range spec.PublishClouds() {
		p.Images = append(p.Images, PlannedImage{Cloud: c, Name: spec.ImageName})
	}
	if p.Images == nil {
		p.Images = []PlannedImage{}
	}
	return p, nil
}

// WritePlan prints a dry run's plan: aligned "key  value" lines, then the
// user-data after a "--- user-data" line; or one JSON document.
func WritePlan(w io.Writer, f Format, p Plan) error {
	if f == FormatJSON {
		return writeJSON(w, p)
	}
	or := func(s, alt string) string {
		if s == "" {
			return alt
		}
		return s
	}
	var b strings.Builder
	fmt.Fprintln(&b, "# Dry run: nothing was created; the build would do this.")
	tw := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("builder", string(p.Builder))
	row("build cloud", or(p.Cloud, notSet))
	row("arch", fmt.Sprintf("%s (image %s, Glance %s)", p.Arch, p.Arch.CloudImage(), p.Arch.OpenStack()))
	row("base", fmt.Sprintf("%s (%s)", p.Base, p.Base.Version()))
	if p.Builder == config.BuilderOpenStack {
		row("base image", p.BaseImage)
		row("builder server", p.BuilderServer)
		row("keypair", p.Keypair)
		row("security group", p.SecurityGroup)
		row("flavor", or(p.Flavor, "smallest with 2 vCPU, 1 GiB RAM, 20 GiB disk"))
		row("network", or(p.Network, "the one with a subnet"))
	} else {
		row("output", or(p.Output, notSet))
	}
	if p.SSHJump != "" {
		row("ssh", "through the jump host "+p.SSHJump)
	}
	row("state dir", p.StateDir)
	switch {
	case p.Runner.Version != "" && p.Runner.URL != "":
		row("runner", fmt.Sprintf("%s v%s linux-%s", p.Runner.Repo, p.Runner.Version, p.Runner.Arch))
		row("runner tarball", p.Runner.URL)
		row("runner sha256", p.Runner.SHA256)
	case p.Runner.Version != "":
		row("runner", fmt.Sprintf("v%s expected (--user-data replaces the recipe)", p.Runner.Version))
	default:
		row("runner", "not resolved (--user-data replaces the recipe)")
	}
	row("proxy", or(p.Proxy, "none"))
	row("script", or(p.ScriptURL, "none"))
	row("script secrets", or(strings.Join(p.SecretNames, ", "), "none"))
	for _, img := range p.Images {
		row("image", fmt.Sprintf("%s in %s (%s, keep %d revisions)", img.Name, or(img.Cloud, notSet), p.Visibility, p.KeepRevisions))
	}
	if len(p.Images) == 0 {
		row("image", "not published (no --upload-clouds)")
	}
	var ts []string
	for _, k := range []string{"boot", "ssh", "cloud_init", "script", "snapshot", "copy"} {
		ts = append(ts, strings.ReplaceAll(k, "_", "-")+" "+p.Timeouts[k])
	}
	row("timeouts", strings.Join(ts, ", "))
	row("user-data", fmt.Sprintf("%s, %d bytes", p.UserDataFrom, len(p.UserData)))
	if err := tw.Flush(); err != nil {
		return wrapWrite(err)
	}
	fmt.Fprintln(&b, "--- user-data")
	b.WriteString(p.UserData)
	_, err := io.WriteString(w, b.String())
	return wrapWrite(err)
}

// shortDuration prints 20m as "20m" rather than "20m0s", and 1h as "1h".
func shortDuration(d time.Duration) string {
	out := d.String()
	if strings.HasSuffix(out, "m0s") {
		out = strings.TrimSuffix(out, "0s")
	}
	if strings.HasSuffix(out, "h0m") {
		out = strings.TrimSuffix(out, "0m")
	}
	return out
}

// writeKept tells how to reach and remove the builder that a failed build
// with --keep-on-failure left running (nothing when err has none).
func writeKept(w io.Writer, err error) {
	var k *config.KeptBuilder
	if !errors.As(err, &k) {
		return
	}
	ssh, remove := k.Commands()
	fmt.Fprintf(w, "The builder server %s (%s) in cloud %s is left running for debugging (--keep-on-failure).\n", k.Name, k.Server, k.Cloud)
	if ssh != "" {
		fmt.Fprintf(w, "  Reach it:  %s\n", ssh)
	} else {
		fmt.Fprintf(w, "  SSH never answered; read its console: openstack --os-cloud %s console log show %s\n", k.Cloud, k.Server)
	}
	fmt.Fprintf(w, "  Remove it: %s\n", remove)
}
