package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
	"github.com/runner-image-builder/github-runner-image-builder/internal/service/install"
)

// SetupOptions say where and how setup installs the builder host.
type SetupOptions struct {
	// Root is prepended to every path written ("" or "/": the real system).
	// Under another root no command is run (they are reported as skipped).
	Root string
	// Mode is system (root: /etc units, /etc/cron.d) or user (systemctl
	// --user with linger, or the user's crontab).
	Mode install.Mode
	// Scheduler is systemd, cron, or "" to detect: systemd when it runs
	// (/run/systemd/system exists), else cron when it is installed.
	Scheduler install.Scheduler
	User      string // the account builds run as
	Home      string // its home (user mode)
	// CloudsYAML is the clouds.yaml to install; nil keeps the one there is.
	CloudsYAML []byte
	// Binary is this program's absolute path, for the schedule.
	Binary string
	// SkipInit does not seed the base images.
	SkipInit bool
	// Commands runs systemctl, loginctl and crontab (nil: run nothing).
	Commands install.Commander
}

// SetupReport says what setup did.
type SetupReport struct {
	CloudsFile    string            `json:"clouds_file"`
	CloudsWritten bool              `json:"clouds_written"`
	Init          string            `json:"init"`
	Scheduler     install.Scheduler `json:"scheduler"`
	Schedule      install.Report    `json:"schedule"`
	Name          string            `json:"name"`
	LogFile       string            `json:"log_file,omitempty"`
}

// Paths of the builder host's files for a mode (without the root).
type Paths struct {
	CloudsFile string // the installed clouds.yaml (unless the config names one)
	UnitDir    string
	CronDir    string
	LogDir     string // cron runs append their output here
	StateHome  string // XDG_STATE_HOME of scheduled builds ("" = the user's)
	CacheHome  string // XDG_CACHE_HOME of scheduled builds ("" = the user's)
}

// DefaultPaths are the locations of mode: system files under /etc and
// /var, user files under home (XDG defaults).
func DefaultPaths(mode install.Mode, home string) Paths {
	if mode == install.System {
		return Paths{
			CloudsFile: "/etc/" + config.AppName + "/clouds.yaml",
			UnitDir:    "/etc/systemd/system",
			CronDir:    "/etc/cron.d",
			LogDir:     "/var/log/" + config.AppName,
			StateHome:  "/var/lib",
			CacheHome:  "/var/cache",
		}
	}
	return Paths{
		CloudsFile: filepath.Join(home, ".config", config.AppName, "clouds.yaml"),
		UnitDir:    filepath.Join(home, ".config", "systemd", "user"),
		LogDir:     filepath.Join(home, ".local", "state", config.AppName, "log"),
	}
}

// ScheduleName is the unit and cron file name of a prefix.
func ScheduleName(prefix string) string {
	return config.AppName + "-" + strings.ReplaceAll(prefix, ".", "_")
}

// Setup installs the builder host of c, idempotently:
//
//  1. the clouds.yaml given (checked to name the build and upload clouds),
//     atomically, 0600, only when its content or mode differs;
//  2. init for the bases not seeded yet (or all, when the refresh is due);
//  3. the schedule: a systemd service and timer, or a cron entry, running
//     `build --config <c.Path>` every c.Interval; the other scheduler's
//     files of the same name are removed.
//
// Run twice with the same input, the second run writes nothing; with only
// the interval changed, only the timer (or cron entry) is rewritten.
func (s *Service) Setup(ctx context.Context, o SetupOptions) (*SetupReport, error) {
	c := s.Config
	if o.Mode != install.System && o.Mode != install.User {
		return nil, errs.Usage("setup mode %q: use system or user", o.Mode)
	}
	if !filepath.IsAbs(o.Binary) {
		return nil, errs.Usage("setup: the program path %q is not absolute", o.Binary)
	}
	if o.Mode == install.User && !filepath.IsAbs(o.Home) {
		return nil, errs.Usage("setup --mode user: HOME %q is not an absolute path", o.Home)
	}
	if err := c.checkSecretFiles(); err != nil {
		return nil, err
	}
	paths := DefaultPaths(o.Mode, o.Home)
	rep := &SetupReport{CloudsFile: cmpOr(c.CloudsFile, paths.CloudsFile), Name: ScheduleName(c.Build.Prefix)}
	root := o.Root
	if root == "/" {
		root = ""
	}
	if root != "" {
		o.Commands = nil
	}

	if o.CloudsYAML != nil {
		if err := checkClouds(o.CloudsYAML, c); err != nil {
			return nil, err
		}
		dir := filepath.Join(root, filepath.Dir(rep.CloudsFile))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("creating %s: %w", dir, err)
		}
		wrote, err := install.WriteIfChanged(filepath.Join(root, rep.CloudsFile), o.CloudsYAML, 0o600)
		if err != nil {
			return nil, err
		}
		rep.CloudsWritten = wrote
	}

	rep.Init = "skipped (--skip-init)"
	if !o.SkipInit {
		msg, err := s.setupInit(ctx)
		if err != nil {
			return rep, err
		}
		rep.Init = msg
	}

	sched, err := detectScheduler(root, o)
	if err != nil {
		return rep, err
	}
	rep.Scheduler = sched
	env := []install.EnvVar{{Name: "OS_CLIENT_CONFIG_FILE", Value: rep.CloudsFile}}
	if paths.StateHome != "" {
		env = append(env, install.EnvVar{Name: "XDG_STATE_HOME", Value: paths.StateHome},
			install.EnvVar{Name: "XDG_CACHE_HOME", Value: paths.CacheHome})
	}
	// proxy.host: the build (and its callbacks) run with the configured
	// proxy variables, whatever the scheduler's environment holds.
	for _, kv := range c.Build.HostProxy.Env() {
		k, v, _ := strings.Cut(kv, "=")
		env = append(env, install.EnvVar{Name: k, Value: v})
	}
	schedule := install.Schedule{
		Name:         rep.Name,
		Description:  fmt.Sprintf("Build GitHub runner images of %s (%s)", c.Build.Prefix, c.Path),
		Interval:     c.Interval,
		Command:      []string{o.Binary, "build", "--config", c.Path},
		Env:          env,
		TimeoutStart: c.BuildTimeout + 15*time.Minute,
		TimeoutStop:  15 * time.Minute,
	}
	if sched == install.Cron {
		rep.LogFile = filepath.Join(paths.LogDir, rep.Name+".log")
		if err := os.MkdirAll(filepath.Join(root, paths.LogDir), 0o700); err != nil {
			return rep, fmt.Errorf("creating the log directory: %w", err)
		}
	}
	t := install.Target{Root: root, Mode: o.Mode, User: o.User, UnitDir: paths.UnitDir, CronDir: paths.CronDir, Commands: o.Commands}
	r, err := install.Install(ctx, t, sched, schedule, rep.LogFile)
	rep.Schedule = r
	if err != nil {
		return rep, errs.Wrap(errs.KindInternal, err, "installing the schedule")
	}
	return rep, nil
}

// setupInit seeds the bases that need it and says what it did.
func (s *Service) setupInit(ctx context.Context) (string, error) {
	if s.Init == nil {
		return "", errs.New(errs.KindInternal, "init is not available in this build: pass --skip-init")
	}
	dir, err := s.Config.serviceDir(s.getenv)
	if err != nil {
		return "", err
	}
	store := stateStore{dir: dir}
	st, err := store.Load()
	if err != nil {
		return "", err
	}
	specs, err := s.initSpecsDue(st, false)
	if err != nil {
		return "", err
	}
	if len(specs) == 0 {
		return "not needed (every base is seeded, last refresh " + st.LastBaseRefresh.UTC().Format(time.RFC3339) + ")", nil
	}
	if err := s.runInit(ctx, store, st, specs); err != nil {
		return "", err
	}
	var done []string
	for _, sp := range specs {
		bases := make([]string, len(sp.Bases))
		for i, b := range sp.Bases {
			bases[i] = string(b)
		}
		done = append(done, fmt.Sprintf("%s (%s)", sp.Arch, strings.Join(bases, ", ")))
	}
	return "seeded " + strings.Join(done, "; "), nil
}

// detectScheduler picks systemd when it runs, else cron when installed.
func detectScheduler(root string, o SetupOptions) (install.Scheduler, error) {
	switch o.Scheduler {
	case install.Systemd, install.Cron:
		return o.Scheduler, nil
	case "":
	default:
		return "", errs.Usage("--scheduler %q: use systemd, cron or auto", o.Scheduler)
	}
	if isDir(filepath.Join(root, "/run/systemd/system")) {
		return install.Systemd, nil
	}
	if o.Mode == install.System && (isDir(filepath.Join(root, "/etc/cron.d")) || exists(filepath.Join(root, "/usr/sbin/cron"))) {
		return install.Cron, nil
	}
	if o.Mode == install.User && root == "" {
		if _, err := exec.LookPath("crontab"); err == nil {
			return install.Cron, nil
		}
	}
	return "", errs.Usage("neither systemd nor cron runs on this host: run `%s serve --config %s` under your supervisor, or pass --scheduler", config.AppName, "FILE")
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// checkClouds checks that the clouds.yaml to install is YAML with a clouds
// mapping naming the build cloud and every upload cloud, an images:
// entry's too. Its values (the passwords) are never quoted in an error.
func checkClouds(data []byte, c *Config) error {
	var doc struct {
		Clouds map[string]yaml.Node `yaml:"clouds"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		var te *yaml.TypeError
		line := ""
		if errors.As(err, &te) {
			line = " (check its structure)"
		}
		return errs.Usage("--clouds-yaml: not a clouds.yaml%s", line)
	}
	if len(doc.Clouds) == 0 {
		return errs.Usage("--clouds-yaml: it has no clouds: mapping")
	}
	var names []string
	for n := range doc.Clouds {
		names = append(names, n)
	}
	slices.Sort(names)
	need := c.AllClouds() // the build cloud, the upload clouds and every image's
	for _, n := range need {
		if _, ok := doc.Clouds[n]; !ok {
			return errs.Usage("--clouds-yaml: the configuration names cloud %q, which it does not define (it defines %s)", n, strings.Join(names, ", "))
		}
	}
	for _, n := range need {
		if err := openstack.CheckCloud(n, "--clouds-yaml", data); err != nil {
			return err
		}
	}
	return nil
}
