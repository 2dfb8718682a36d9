package cli

import (
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
)

func (inv *invocation) initCommand() *cobra.Command {
	var (
		arch, prefix, baseURL, builder, cacheDir string
		baseFile, baseSerial, baseSHA            string
		bases, props                             []string
	)
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Seed the cloud with base images, the builder keypair and security group",
		Long: `Download and verify the Ubuntu base images (every base by default) and
upload them to --os-cloud, and create the builder's keypair and security
group. Run it once per arch and prefix before run; it is safe to re-run.
With --builder local it only fills the cache and touches no cloud.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := config.ParseArchFlag(arch)
			if err != nil {
				return err
			}
			spec := config.InitSpec{Cloud: inv.cloud(), Arch: a, Prefix: prefix, BaseImageURL: baseURL, CacheDir: cacheDir,
				BaseImageFile: baseFile, BaseImageSerial: baseSerial, BaseImageSHA256: strings.ToLower(strings.TrimSpace(baseSHA))}
			if spec.BaseImageProperties, err = config.ParseProperties("--base-image-property", props); err != nil {
				return err
			}
			if spec.Builder, err = config.ParseBuilder(builder); err != nil {
				return err
			}
			if len(bases) == 0 {
				spec.Bases = config.BasesFor(a)
			} else if spec.Bases, err = config.ParseBaseList("--base-image", bases); err != nil {
				return err
			}
			if spec.CacheDir == "" {
				if spec.CacheDir, err = config.CacheDir(inv.getenv); err != nil {
					return err
				}
			}
			if err := spec.Validate(); err != nil {
				return err
			}
			if spec.CloudsPaths, err = openstack.CloudsPaths(inv.getenv); err != nil {
				return err
			}
			if inv.app.Backend.Init == nil {
				return notImplemented("init --builder " + string(spec.Builder))
			}
			if spec.Builder == config.BuilderLocal {
				inv.quietForProgress()
			}
			return inv.app.Backend.Init(cmd.Context(), inv.logger(), spec)
		},
	}
	fl := cmd.Flags()
	fl.SortFlags = false
	fl.StringVar(&arch, "arch", "", "runner architecture (required): x64|amd64|x86_64, arm64|aarch64, s390x, ppc64le|ppc64el, arm|armhf")
	fl.StringVar(&prefix, "prefix", "", "prefix of the resource names, for parallel builders in one project")
	fl.StringArrayVarP(&bases, "base-image", "b", nil, "Ubuntu bases to seed, repeatable or comma-separated: focal|20.04, jammy|22.04, noble|24.04, resolute|26.04 (default: all the arch supports)")
	fl.StringVar(&baseURL, "base-image-url", "", "mirror of https://cloud-images.ubuntu.com/ to download base images from (http or https)")
	fl.StringVar(&builder, "builder", string(config.BuilderOpenStack), "openstack (upload to --os-cloud) or local (fill the cache only)")
	fl.StringVar(&cacheDir, "cache-dir", "", "where verified base images are kept (default $XDG_CACHE_HOME/github-runner-image-builder)")
	fl.StringVar(&baseSerial, "base-image-serial", "", "pin a dated serial of the base images, e.g. 20251113 (default current)")
	fl.StringVar(&baseSHA, "base-image-sha256", "", "expected SHA-256 of the one base image (with --base-image-file, or to pin a mirror image)")
	fl.StringVar(&baseFile, "base-image-file", "", "use this local image file as the one --base-image instead of downloading (offline hosts)")
	fl.StringArrayVar(&props, "base-image-property", nil, "extra Glance property KEY=VALUE of the base images, repeatable (builds inherit them)")
	return cmd
}

func (inv *invocation) latestCommand() *cobra.Command {
	var (
		anyStatus bool
		format    string
	)
	cmd := &cobra.Command{
		Use:   "latest-build-id IMAGE_NAME",
		Short: "Print the ID of the newest image named IMAGE_NAME",
		Long: `Print the ID of the newest active image named exactly IMAGE_NAME in
--os-cloud, with no trailing newline; print nothing when there is none.
The exit code is 0 either way.`,
		Args: exactlyOne("IMAGE_NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := ParseFormat(format)
			if err != nil {
				return err
			}
			q := config.LatestQuery{Cloud: inv.cloud(), ImageName: args[0], AnyStatus: anyStatus}
			if err := q.Validate(); err != nil {
				return err
			}
			if q.CloudsPaths, err = openstack.CloudsPaths(inv.getenv); err != nil {
				return err
			}
			if inv.app.Backend.LatestBuildID == nil {
				return notImplemented("latest-build-id")
			}
			id, err := inv.app.Backend.LatestBuildID(cmd.Context(), inv.logger(), q)
			if err != nil {
				return err
			}
			return WriteLatest(inv.app.Stdout, f, q, id)
		},
	}
	fl := cmd.Flags()
	fl.SortFlags = false
	fl.BoolVar(&anyStatus, "any-status", false, "also consider images that are not active yet (queued, saving, importing)")
	fl.StringVar(&format, "format", "text", "output format: text (the bare ID) or json")
	return cmd
}

func (inv *invocation) sweepCommand() *cobra.Command {
	var (
		spec   config.SweepSpec
		format string
	)
	cmd := &cobra.Command{
		Use:   "sweep",
		Short: "Remove what crashed runs of a prefix left behind",
		Long: `Remove the builder servers, keypairs, temporary images and security groups
of --prefix that crashed or killed runs left in --os-cloud, if at least
--older-than old, and print what was removed. Published images are never
touched.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := ParseFormat(format)
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("prefix") {
				return errs.Usage("--prefix is required: the prefix whose leftovers to remove (--prefix '' for the Python tool's empty default)")
			}
			spec.Cloud = inv.cloud()
			if err := spec.Validate(); err != nil {
				return err
			}
			if spec.CloudsPaths, err = openstack.CloudsPaths(inv.getenv); err != nil {
				return err
			}
			if inv.app.Backend.Sweep == nil {
				return notImplemented("sweep")
			}
			swept, err := inv.app.Backend.Sweep(cmd.Context(), inv.logger(), spec)
			if err != nil {
				return err
			}
			return WriteSwept(inv.app.Stdout, f, spec.DryRun, swept)
		},
	}
	fl := cmd.Flags()
	fl.SortFlags = false
	fl.StringVar(&spec.Prefix, "prefix", "", "prefix whose leftovers to remove (required; '' is the Python tool's default)")
	fl.DurationVar(&spec.OlderThan, "older-than", 6*time.Hour, "remove only resources at least this old (Go duration, at least 1m)")
	fl.BoolVar(&spec.DryRun, "dry-run", false, "list what would be removed; remove nothing")
	fl.StringVar(&spec.Server, "server", "", "remove only this builder server (ID) of --prefix, whatever its age: what run --keep-on-failure left")
	fl.StringVar(&format, "format", "text", "output format: text or json")
	return cmd
}
