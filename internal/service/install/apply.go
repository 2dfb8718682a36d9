package install

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
)

// Commander runs a host command (systemctl, loginctl, crontab) with stdin
// and returns its combined output.
type Commander interface {
	Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error)
}

// ExecCommander runs commands with os/exec.
type ExecCommander struct {
	// Getenv is the environment the commands' minimal one is taken from
	// (config.ChildEnv, plus what `systemctl --user` needs to reach the
	// user's manager); nil is os.Getenv.
	Getenv func(string) string
}

// Run implements Commander.
func (c ExecCommander) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	getenv := c.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = config.ChildEnv(getenv, "XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS")
	if stdin != nil {
		cmd.Stdin = strings.NewReader(string(stdin))
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// Target is where and for whom the schedule is installed.
type Target struct {
	// Root is prepended to every path written ("" or "/": the real system).
	Root string
	Mode Mode
	// User is the account the build runs as: the cron.d user field (system
	// mode), the crontab owner and the user whose linger is enabled (user mode).
	User string
	// UnitDir is where unit files go: /etc/systemd/system in system mode,
	// ~/.config/systemd/user in user mode (the caller resolves it).
	UnitDir string
	// CronDir is /etc/cron.d (system mode); CrontabSpool is the user crontab
	// file written directly when Commands is nil (user mode; default
	// /var/spool/cron/crontabs/USER).
	CronDir      string
	CrontabSpool string
	// Commands runs systemctl, loginctl and crontab; nil runs nothing and
	// reports the commands as skipped (installing into another root).
	Commands Commander
}

// Report says what Install changed.
type Report struct {
	Written []string // files written (content or mode differed)
	Removed []string // files of the other scheduler removed
	Ran     []string // commands run
	Skipped []string // commands that would have run (no Commander)
}

// Changed reports whether anything was written or removed.
func (r Report) Changed() bool { return len(r.Written)+len(r.Removed) > 0 }

// Paths of the schedule's files (without Root).
func (t Target) unitPaths(name string) (service, timer string) {
	return filepath.Join(t.UnitDir, name+".service"), filepath.Join(t.UnitDir, name+".timer")
}

func (t Target) cronPath(name string) string {
	return filepath.Join(t.CronDir, strings.ReplaceAll(name, ".", "_"))
}

func (t Target) spoolPath() string {
	if t.CrontabSpool != "" {
		return t.CrontabSpool
	}
	return filepath.Join("/var/spool/cron/crontabs", t.User)
}

// ServicePath and TimerPath are where Install writes the units (under Root).
func (t Target) ServicePath(name string) string { s, _ := t.unitPaths(name); return under(t.Root, s) }

// TimerPath is the timer's file under Root.
func (t Target) TimerPath(name string) string { _, tm := t.unitPaths(name); return under(t.Root, tm) }

// CronPath is the cron.d file under Root (system mode).
func (t Target) CronPath(name string) string { return under(t.Root, t.cronPath(name)) }

func (t Target) validate(sched Scheduler) error {
	switch {
	case t.Mode != System && t.Mode != User:
		return fmt.Errorf("install mode %q: use system or user", t.Mode)
	case sched != Systemd && sched != Cron:
		return fmt.Errorf("scheduler %q: use systemd or cron", sched)
	case t.User == "" || strings.ContainsAny(t.User, "/ \t\n"):
		return fmt.Errorf("install user %q: give a login name", t.User)
	case !filepath.IsAbs(t.UnitDir):
		return fmt.Errorf("unit directory %q: give an absolute path", t.UnitDir)
	case t.Mode == System && !filepath.IsAbs(t.CronDir):
		return fmt.Errorf("cron directory %q: give an absolute path", t.CronDir)
	}
	return nil
}

// Install puts schedule s in place with sched and removes the other
// scheduler's files of the same name, so that one host never runs both.
// It writes only what changed and runs activation commands only as needed:
// with the same input twice, the second call writes nothing. logFile
// receives the output of cron runs (systemd runs go to the journal).
func Install(ctx context.Context, t Target, sched Scheduler, s Schedule, logFile string) (Report, error) {
	var r Report
	if err := t.validate(sched); err != nil {
		return r, err
	}
	if err := s.Validate(); err != nil {
		return r, err
	}
	var err error
	if sched == Systemd {
		err = installSystemd(ctx, t, s, &r)
		if err == nil {
			err = removeCron(ctx, t, s.Name, &r)
		}
	} else {
		err = removeSystemd(ctx, t, s.Name, &r)
		if err == nil {
			err = installCron(ctx, t, s, logFile, &r)
		}
	}
	return r, err
}

func (r *Report) run(ctx context.Context, t Target, stdin []byte, name string, args ...string) ([]byte, error) {
	line := strings.Join(append([]string{name}, args...), " ")
	if t.Commands == nil {
		r.Skipped = append(r.Skipped, line)
		return nil, nil
	}
	out, err := t.Commands.Run(ctx, stdin, name, args...)
	if err != nil {
		return out, err
	}
	r.Ran = append(r.Ran, line)
	return out, nil
}

func systemctl(t Target, args ...string) []string {
	if t.Mode == User {
		return append([]string{"--user"}, args...)
	}
	return args
}

func installSystemd(ctx context.Context, t Target, s Schedule, r *Report) error {
	svc, tmr := t.ServicePath(s.Name), t.TimerPath(s.Name)
	changed := false
	for _, f := range []struct {
		path, data string
	}{{svc, s.ServiceUnit(t.Mode)}, {tmr, s.TimerUnit()}} {
		wrote, err := WriteIfChanged(f.path, []byte(f.data), 0o644)
		if err != nil {
			return err
		}
		if wrote {
			r.Written = append(r.Written, f.path)
			changed = true
		}
	}
	if t.Mode == User {
		// Without linger the user's manager (and its timers) stops at logout.
		if _, err := r.run(ctx, t, nil, "loginctl", "enable-linger", t.User); err != nil {
			return err
		}
	}
	timer := s.Name + ".timer"
	if !changed {
		_, err := r.run(ctx, t, nil, "systemctl", systemctl(t, "enable", "--now", timer)...)
		return err
	}
	for _, args := range [][]string{{"daemon-reload"}, {"enable", timer}, {"restart", timer}} {
		if _, err := r.run(ctx, t, nil, "systemctl", systemctl(t, args...)...); err != nil {
			return err
		}
	}
	return nil
}

func removeSystemd(ctx context.Context, t Target, name string, r *Report) error {
	svc, tmr := t.ServicePath(name), t.TimerPath(name)
	if !exists(svc) && !exists(tmr) {
		return nil
	}
	if _, err := r.run(ctx, t, nil, "systemctl", systemctl(t, "disable", "--now", name+".timer")...); err != nil {
		return err
	}
	for _, p := range []string{tmr, svc} {
		gone, err := RemoveIfExists(p)
		if err != nil {
			return err
		}
		if gone {
			r.Removed = append(r.Removed, p)
		}
	}
	_, err := r.run(ctx, t, nil, "systemctl", systemctl(t, "daemon-reload")...)
	return err
}

func installCron(ctx context.Context, t Target, s Schedule, logFile string, r *Report) error {
	if t.Mode == System {
		p := t.CronPath(s.Name)
		// cron ignores a cron.d file that is group- or world-writable; it
		// re-reads the directory by itself, so nothing needs restarting.
		wrote, err := WriteIfChanged(p, []byte(s.CronFile(t.User, logFile)), 0o644)
		if wrote {
			r.Written = append(r.Written, p)
		}
		return err
	}
	return editCrontab(ctx, t, s.Name, s.CronBlock(logFile), r)
}

func removeCron(ctx context.Context, t Target, name string, r *Report) error {
	if t.Mode == System {
		p := t.CronPath(name)
		gone, err := RemoveIfExists(p)
		if gone {
			r.Removed = append(r.Removed, p)
		}
		return err
	}
	return editCrontab(ctx, t, name, "", r)
}

// editCrontab replaces (or with block "" removes) our block of the user's
// crontab: through `crontab -l` and `crontab -`, or, when nothing may be run
// (another root), in the spool file.
func editCrontab(ctx context.Context, t Target, name, block string, r *Report) error {
	if t.Commands == nil {
		p := under(t.Root, t.spoolPath())
		cur, err := os.ReadFile(p)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("reading crontab %s: %w", p, err)
		}
		next := replaceCronBlock(string(cur), name, block)
		if next == string(cur) {
			return nil
		}
		if _, err := WriteIfChanged(p, []byte(next), 0o600); err != nil {
			return err
		}
		if block == "" {
			r.Removed = append(r.Removed, p+" (block "+name+")")
		} else {
			r.Written = append(r.Written, p)
		}
		return nil
	}
	out, err := t.Commands.Run(ctx, nil, "crontab", "-l")
	if err != nil {
		if !strings.Contains(string(out)+err.Error(), "no crontab") {
			if block == "" && errors.Is(err, exec.ErrNotFound) {
				return nil // no crontab program: there is no block to remove
			}
			return fmt.Errorf("reading the crontab of %s: %w", t.User, err)
		}
		out = nil
	}
	next := replaceCronBlock(string(out), name, block)
	if next == string(out) {
		return nil
	}
	if _, err := r.run(ctx, t, []byte(next), "crontab", "-"); err != nil {
		return err
	}
	if block == "" {
		r.Removed = append(r.Removed, "crontab of "+t.User+" (block "+name+")")
	} else {
		r.Written = append(r.Written, "crontab of "+t.User)
	}
	return nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
