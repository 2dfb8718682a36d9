package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/runner-image-builder/github-runner-image-builder/internal/build"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
	"github.com/runner-image-builder/github-runner-image-builder/internal/release"
	"github.com/runner-image-builder/github-runner-image-builder/internal/service"
	"github.com/runner-image-builder/github-runner-image-builder/internal/service/install"
)

// The builder host's commands: setup, build, latest and serve, all driven
// by one configuration file (internal/service). Every cell of the matrix is
// built through buildSpec, the same path as `run`.

const configFlagHelp = "the builder host's configuration file (YAML; see the README)"

// serviceFor loads the configuration and connects the service to the
// Backend: builds go through Backend.Builds (the path of `run`), images are
// listed through the same cloud connector (or Backend.Catalog).
func (inv *invocation) serviceFor(path string, metrics *service.Metrics) (*service.Service, error) {
	if path == "" {
		return nil, errs.Usage("--config is required: the builder host's configuration file")
	}
	cfg, err := service.LoadConfig(path)
	if err != nil {
		return nil, err
	}
	paths, err := inv.cloudsPaths(cfg)
	if err != nil {
		return nil, err
	}
	log := inv.logger()
	builds := inv.builds()
	s := &service.Service{
		Config:      cfg,
		Builder:     builds,
		Catalog:     inv.app.Backend.Catalog,
		Metrics:     metrics,
		Log:         log,
		Environ:     inv.app.Environ,
		CloudsPaths: paths,
	}
	if s.Catalog == nil {
		s.Catalog = service.NewCloudCatalog(paths, cfg.Build.HostProxy, log)
	}
	if inv.app.Backend.Init != nil {
		s.Init = initFunc(inv.app.Backend.Init)
	}
	s.Resolver = builds.Resolver
	if s.Resolver == nil {
		var token string
		if cfg.RunnerToken != nil {
			if tok, err := cfg.RunnerToken.Read(inv.getenv); err == nil {
				token = tok.Reveal()
			}
		}
		s.Resolver = &release.Resolver{APIURL: cfg.Build.RunnerAPIURL, Repo: cfg.Build.RunnerRepo, Token: token, Log: log,
			HTTP: build.HostClient(cfg.Build.HostProxy, release.DefaultTimeout)}
	}
	return s, nil
}

// cloudsPaths is where clouds.yaml is looked up for the configuration: its
// clouds_file, else $OS_CLIENT_CONFIG_FILE, else setup's file when it
// exists, else the openstack CLI's search path. The builds and look-ups
// are given these paths (nothing is passed through the environment).
func (inv *invocation) cloudsPaths(cfg *service.Config) ([]string, error) {
	file := cfg.CloudsFile
	if file == "" && inv.getenv(openstack.CloudsFileEnv) == "" {
		if p := service.DefaultPaths(hostMode(), inv.getenv("HOME")).CloudsFile; fileExists(p) {
			file = p
		}
	}
	if file == "" {
		return openstack.CloudsPaths(inv.getenv)
	}
	return []string{file}, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func hostMode() install.Mode {
	if os.Geteuid() == 0 {
		return install.System
	}
	return install.User
}

type initFunc func(ctx context.Context, log *slog.Logger, spec config.InitSpec) error

func (f initFunc) Init(ctx context.Context, log *slog.Logger, spec config.InitSpec) error {
	return f(ctx, log, spec)
}

func (inv *invocation) setupCommand() *cobra.Command {
	var (
		cfgPath, cloudsYAML, root, mode, scheduler, binary, format string
		skipInit                                                   bool
	)
	cmd := &cobra.Command{
		Use:   "setup --config FILE",
		Short: "Install the builder host: clouds.yaml, base images and the build schedule",
		Long: `Install the builder host described by --config: copy --clouds-yaml into place
(0600, only when it changed), seed the base images of the matrix (init), and
schedule "build --config FILE" every schedule.interval: a systemd service and
timer (Persistent=true: a run missed while the host was down happens at
boot; a run never starts while the last one is still going) where systemd
runs, a cron entry otherwise. As root the units are system units; otherwise
they are the user's (systemctl --user, with linger so they run without a
session). Re-running it with the same input changes nothing; with a new
interval only the schedule changes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := ParseFormat(format)
			if err != nil {
				return err
			}
			s, err := inv.serviceFor(cfgPath, nil)
			if err != nil {
				return err
			}
			o := service.SetupOptions{Root: root, SkipInit: skipInit, Binary: binary, Commands: install.ExecCommander{Getenv: inv.getenv}}
			switch strings.ToLower(mode) {
			case "auto", "":
				o.Mode = hostMode()
			case string(install.System), string(install.User):
				o.Mode = install.Mode(strings.ToLower(mode))
			default:
				return errs.Usage("--mode %q: use auto, system or user", mode)
			}
			switch strings.ToLower(scheduler) {
			case "auto", "":
			case string(install.Systemd), string(install.Cron):
				o.Scheduler = install.Scheduler(strings.ToLower(scheduler))
			default:
				return errs.Usage("--scheduler %q: use auto, systemd or cron", scheduler)
			}
			if o.Binary == "" {
				if o.Binary, err = os.Executable(); err != nil {
					return errs.Wrap(errs.KindInternal, err, "finding this program's path (pass --binary)")
				}
			}
			if o.Binary, err = filepath.Abs(o.Binary); err != nil {
				return errs.Wrap(errs.KindUsage, err, "--binary")
			}
			o.Home = inv.getenv("HOME")
			switch {
			case o.Mode == install.System:
				o.User = "root" // the cron.d user field; system units run as root
			case inv.getenv("USER") != "":
				o.User = inv.getenv("USER")
			default:
				u, err := user.Current()
				if err != nil {
					return errs.Wrap(errs.KindUsage, err, "finding the current user (set USER)")
				}
				o.User = u.Username
			}
			if cloudsYAML != "" {
				if o.CloudsYAML, err = build.ReadSmallFile("--clouds-yaml", cloudsYAML, 1<<20); err != nil {
					return err
				}
			}
			rep, err := s.Setup(cmd.Context(), o)
			if rep != nil {
				if werr := writeSetupReport(inv.app.Stdout, f, rep); werr != nil && err == nil {
					err = werr
				}
			}
			return err
		},
	}
	fl := cmd.Flags()
	fl.SortFlags = false
	fl.StringVar(&cfgPath, "config", "", configFlagHelp)
	fl.StringVar(&cloudsYAML, "clouds-yaml", "", "clouds.yaml to install (0600) for the builds; it must define the configured clouds")
	fl.BoolVar(&skipInit, "skip-init", false, "do not seed the base images now (the first build seeds what is missing)")
	fl.StringVar(&scheduler, "scheduler", "auto", "auto (systemd when it runs, else cron), systemd or cron")
	fl.StringVar(&mode, "mode", "auto", "auto (system as root, else user), system or user")
	fl.StringVar(&root, "root", "", "install under this directory instead of / and run no command (images, tests)")
	fl.StringVar(&binary, "binary", "", "path of this program for the schedule (default: this executable)")
	fl.StringVar(&format, "format", "text", "output format: text or json")
	return cmd
}

func writeSetupReport(w io.Writer, f Format, rep *service.SetupReport) error {
	if f == FormatJSON {
		return writeJSON(w, rep)
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	state := "unchanged"
	if rep.CloudsWritten {
		state = "written"
	}
	fmt.Fprintf(tw, "clouds.yaml\t%s (%s)\n", rep.CloudsFile, state)
	fmt.Fprintf(tw, "init\t%s\n", rep.Init)
	if rep.Scheduler != "" {
		fmt.Fprintf(tw, "schedule\t%s %s\n", rep.Scheduler, rep.Name)
	}
	if rep.LogFile != "" {
		fmt.Fprintf(tw, "log\t%s\n", rep.LogFile)
	}
	for _, p := range rep.Schedule.Written {
		fmt.Fprintf(tw, "wrote\t%s\n", p)
	}
	for _, p := range rep.Schedule.Removed {
		fmt.Fprintf(tw, "removed\t%s\n", p)
	}
	for _, c := range rep.Schedule.Ran {
		fmt.Fprintf(tw, "ran\t%s\n", c)
	}
	for _, c := range rep.Schedule.Skipped {
		fmt.Fprintf(tw, "not run\t%s\n", c)
	}
	if !rep.CloudsWritten && !rep.Schedule.Changed() {
		fmt.Fprintf(tw, "changes\tnone\n")
	}
	if err := tw.Flush(); err != nil {
		return wrapWrite(err)
	}
	_, err := io.WriteString(w, b.String())
	return wrapWrite(err)
}

func (inv *invocation) buildCommand() *cobra.Command {
	var (
		cfgPath, latestFile, format string
		opts                        service.BuildOptions
	)
	cmd := &cobra.Command{
		Use:   "build --config FILE",
		Short: "Build every image of the configured matrix now",
		Long: `Build every image (base x arch) of --config's matrix now, at most
parallelism at once, each exactly as "run" would, and hand the new images to
the consumers: --latest-file (or latest_file) is rewritten atomically, then
callback.on_success gets the image IDs as arguments and a JSON document on
stdin ({"result","images":[{"cloud","base","arch","name","id"}]}); only when
it succeeds do the images become the ones never pruned. callback.on_failure
gets the failed images.

A build of an image name already building elsewhere makes this one exit at
once with code 9 and "build of NAME in progress (pid P)", unless --wait.
A cell failing with a transient cloud error (HTTP 5xx, connection reset) is
retried with backoff; some cells failing while others built exits 10.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := ParseFormat(format)
			if err != nil {
				return err
			}
			metrics := service.NewMetrics(false, nil)
			s, err := inv.serviceFor(cfgPath, metrics)
			if err != nil {
				return err
			}
			opts.LatestFile = latestFile
			if latestFile != "" && !filepath.IsAbs(latestFile) {
				if opts.LatestFile, err = filepath.Abs(latestFile); err != nil {
					return errs.Wrap(errs.KindUsage, err, "--latest-file")
				}
			}
			inv.quietForProgress() // phase lines on a terminal instead of the info log
			rep, err := s.Build(cmd.Context(), opts)
			if p := s.Config.TextfilePath(); p != "" {
				if werr := metrics.WriteTextfile(p); werr != nil {
					inv.logger().Error("writing the metrics textfile", "path", p, "error", werr)
				}
			}
			if rep != nil {
				if werr := writeBuildReport(inv.app.Stdout, f, rep); werr != nil && err == nil {
					err = werr
				}
			}
			return err
		},
	}
	fl := cmd.Flags()
	fl.SortFlags = false
	fl.StringVar(&cfgPath, "config", "", configFlagHelp)
	fl.BoolVar(&opts.Wait, "wait", false, "wait for a running build of the same images instead of exiting with code 9")
	fl.BoolVar(&opts.IfDue, "if-due", false, "build only the images that are due (missing, older than the interval, or a new runner release)")
	fl.StringVar(&latestFile, "latest-file", "", "write the newest images here as JSON (default: latest_file of the configuration)")
	fl.StringVar(&format, "format", "text", "output format: text or json")
	return cmd
}

func writeBuildReport(w io.Writer, f Format, rep *service.Report) error {
	if f == FormatJSON {
		return writeJSON(w, rep)
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	for _, c := range rep.Cells {
		switch {
		case c.Skipped:
			fmt.Fprintf(tw, "%s\tnot due\n", c.ImageName)
		case c.Err != nil:
			fmt.Fprintf(tw, "%s\tfailed (exit %d)\t%s\n", c.ImageName, c.ExitCode, c.Error)
		default:
			ids := make([]string, len(c.Images))
			for i, im := range c.Images {
				ids[i] = im.Cloud + "=" + im.ID
			}
			fmt.Fprintf(tw, "%s\tbuilt\t%s\n", c.ImageName, strings.Join(ids, " "))
		}
	}
	for _, warn := range rep.Warnings {
		fmt.Fprintf(tw, "warning\t%s\n", warn)
	}
	if err := tw.Flush(); err != nil {
		return wrapWrite(err)
	}
	_, err := io.WriteString(w, b.String())
	return wrapWrite(err)
}

func (inv *invocation) latestImagesCommand() *cobra.Command {
	var cfgPath, format string
	cmd := &cobra.Command{
		Use:   "latest --config FILE",
		Short: "Print the newest active image of every base, arch and cloud of the matrix",
		Long: `Print the newest active image of every base x arch of --config in every
upload cloud: a table, or with --format json per cloud the charm's image
relation data ({"clouds":{CLOUD:{"id","tags":"<arch>,<base>","images":[...]}}}),
so the charm's consumers can switch to it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := ParseFormat(format)
			if err != nil {
				return err
			}
			s, err := inv.serviceFor(cfgPath, nil)
			if err != nil {
				return err
			}
			images, err := s.Latest(cmd.Context())
			if err != nil {
				return err
			}
			if f == FormatJSON {
				data, err := service.MarshalLatest(service.NewLatestDocument(images))
				if err != nil {
					return err
				}
				_, err = inv.app.Stdout.Write(data)
				return wrapWrite(err)
			}
			return wrapWrite(service.WriteLatestText(inv.app.Stdout, images))
		},
	}
	fl := cmd.Flags()
	fl.SortFlags = false
	fl.StringVar(&cfgPath, "config", "", configFlagHelp)
	fl.StringVar(&format, "format", "text", "output format: text or json")
	return cmd
}

func (inv *invocation) serveCommand() *cobra.Command {
	var (
		cfgPath, listen string
		noSchedule      bool
	)
	cmd := &cobra.Command{
		Use:   "serve --config FILE",
		Short: "Run the builder host as a daemon: schedule, /healthz, /metrics, /v1/images/latest",
		Long: `Run the builder host as a long-running daemon, for hosts without systemd or
cron: every schedule.check_interval it builds the images that are due
(missing, older than schedule.interval, or a new runner release), and it
serves on --listen (default serve.listen, 127.0.0.1:9180):

  GET /healthz            200 "ok", or 503 "failing" and why (the log has the details)
  GET /metrics            Prometheus metrics
  GET /v1/images/latest   the newest images, as "latest --format json"

SIGTERM or SIGINT cancels a running build (its cleanups run), stops the HTTP
server and exits 0.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := inv.serviceFor(cfgPath, service.NewMetrics(true, nil))
			if err != nil {
				return err
			}
			addr := s.Config.Listen
			if listen != "" {
				addr = listen
				if err := s.Config.CheckListen(addr); err != nil {
					return errs.Wrap(errs.KindUsage, err, "--listen")
				}
			}
			var lc net.ListenConfig
			ln, err := lc.Listen(cmd.Context(), "tcp", addr)
			if err != nil {
				return errs.Wrap(errs.KindUsage, err, "--listen %s", addr)
			}
			defer ln.Close()
			return s.Serve(cmd.Context(), ln, service.ServeOptions{NoSchedule: noSchedule})
		},
	}
	fl := cmd.Flags()
	fl.SortFlags = false
	fl.StringVar(&cfgPath, "config", "", configFlagHelp)
	fl.StringVar(&listen, "listen", "", "host:port to serve on (default serve.listen of the configuration, 127.0.0.1:9180); other than loopback needs serve.allow_remote: true")
	fl.BoolVar(&noSchedule, "no-schedule", false, "serve HTTP only; never build")
	return cmd
}
