package install

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Scheduler is what runs the scheduled build.
type Scheduler string

// The schedulers.
const (
	Systemd Scheduler = "systemd" // a service and a timer with Persistent=true
	Cron    Scheduler = "cron"    // a cron.d file (system) or a crontab block (user)
)

// Mode says whose schedule it is.
type Mode string

// The modes.
const (
	System Mode = "system" // system units in /etc/systemd/system, /etc/cron.d (root)
	User   Mode = "user"   // systemctl --user with linger, or the user's crontab
)

// Schedule is the scheduled build: what to run and how often.
type Schedule struct {
	// Name is the unit name without suffix and the cron file name, e.g.
	// github-runner-image-builder-grib. Letters, digits, '_' and '-' only.
	Name        string
	Description string
	// Interval is whole minutes dividing an hour (1m..30m) or whole hours
	// from 1h to 24h; runs are aligned to the wall clock, as cron does
	// (6h: 00:00, 06:00, 12:00, 18:00).
	Interval time.Duration
	// Command is the build's argv; Command[0] is an absolute path.
	Command []string
	// Env is set for the command, in this order.
	Env []EnvVar
	// TimeoutStart bounds one run under systemd (0: no bound); the build is
	// sent SIGTERM then, so its cleanups run within TimeoutStop.
	TimeoutStart time.Duration
	TimeoutStop  time.Duration
}

// EnvVar is one environment variable of the scheduled command.
type EnvVar struct{ Name, Value string }

var (
	nameRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$`)
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	bareRE    = regexp.MustCompile(`^[A-Za-z0-9_@%+=:,./-]+$`)
)

// ValidateInterval checks that d can be written as a wall-clock schedule:
// whole minutes that divide an hour, or whole hours from 1 to 24.
func ValidateInterval(d time.Duration) error {
	_, _, err := specs(d)
	return err
}

// specs returns the systemd OnCalendar= and the cron time fields of d.
func specs(d time.Duration) (onCalendar, cron string, err error) {
	switch {
	case d >= time.Minute && d < time.Hour && d%time.Minute == 0 && 60%int(d/time.Minute) == 0:
		m := int(d / time.Minute)
		if m == 1 {
			return "*-*-* *:*:00", "* * * * *", nil
		}
		return fmt.Sprintf("*-*-* *:00/%d:00", m), fmt.Sprintf("*/%d * * * *", m), nil
	case d >= time.Hour && d <= 24*time.Hour && d%time.Hour == 0:
		h := int(d / time.Hour)
		switch h {
		case 1:
			return "*-*-* *:00:00", "0 * * * *", nil
		case 24:
			return "*-*-* 00:00:00", "0 0 * * *", nil
		}
		return fmt.Sprintf("*-*-* 00/%d:00:00", h), fmt.Sprintf("0 */%d * * *", h), nil
	}
	return "", "", fmt.Errorf("interval %s: use whole minutes that divide an hour (1m, 5m, 15m, 30m...) or whole hours from 1h to 24h", d)
}

// Validate checks every field of s.
func (s Schedule) Validate() error {
	if !nameRE.MatchString(s.Name) {
		return fmt.Errorf("schedule name %q: use letters, digits, '_' and '-'", s.Name)
	}
	if err := ValidateInterval(s.Interval); err != nil {
		return err
	}
	if len(s.Command) == 0 || !filepath.IsAbs(s.Command[0]) {
		return fmt.Errorf("schedule command %q: the program must be an absolute path", s.Command)
	}
	for _, a := range append(slices.Clone(s.Command), s.Description) {
		if strings.ContainsFunc(a, isControl) {
			return fmt.Errorf("schedule command or description %q contains a control character", a)
		}
	}
	for _, e := range s.Env {
		if !envNameRE.MatchString(e.Name) || strings.ContainsFunc(e.Value, isControl) {
			return fmt.Errorf("schedule environment %s: a shell variable name and a value without control characters", e.Name)
		}
	}
	if s.TimeoutStart < 0 || s.TimeoutStop < 0 {
		return fmt.Errorf("schedule timeouts must not be negative")
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

const managedLine = "# Managed by github-runner-image-builder setup: edits are overwritten."

// ServiceUnit renders the systemd service that runs one build. Type=oneshot
// means the timer never starts it again while a build runs.
func (s Schedule) ServiceUnit(m Mode) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n[Unit]\nDescription=%s\n", managedLine, unitEscape(s.Description))
	if m == System {
		b.WriteString("Wants=network-online.target\nAfter=network-online.target\n")
	}
	b.WriteString("\n[Service]\nType=oneshot\n")
	for _, e := range s.Env {
		fmt.Fprintf(&b, "Environment=%s\n", envQuote(e.Name+"="+e.Value))
	}
	quoted := make([]string, len(s.Command))
	for i, a := range s.Command {
		quoted[i] = execQuote(a)
	}
	fmt.Fprintf(&b, "ExecStart=%s\n", strings.Join(quoted, " "))
	b.WriteString("UMask=0077\nNoNewPrivileges=yes\nPrivateTmp=yes\n")
	if s.TimeoutStart > 0 {
		fmt.Fprintf(&b, "TimeoutStartSec=%d\n", int(s.TimeoutStart/time.Second))
	}
	if s.TimeoutStop > 0 {
		fmt.Fprintf(&b, "TimeoutStopSec=%d\n", int(s.TimeoutStop/time.Second))
	}
	// SIGTERM goes to the build, which cleans up; SIGKILL to all only after TimeoutStopSec.
	b.WriteString("KillMode=mixed\n")
	return b.String()
}

// TimerUnit renders the timer. Persistent=true starts a run missed while
// the host was down as soon as it is up again.
func (s Schedule) TimerUnit() string {
	cal, _, _ := specs(s.Interval)
	return fmt.Sprintf("%s\n[Unit]\nDescription=%s (every %s)\n\n[Timer]\nOnCalendar=%s\nPersistent=true\nUnit=%s.service\n\n[Install]\nWantedBy=timers.target\n",
		managedLine, unitEscape(s.Description), shortDuration(s.Interval), cal, s.Name)
}

// CronCommand renders the cron time fields, the user field (system mode
// only) and the shell command: environment, the build, its output appended
// to logFile (created 0600).
func (s Schedule) CronCommand(m Mode, user, logFile string) string {
	_, spec, _ := specs(s.Interval)
	var cmd strings.Builder
	cmd.WriteString("umask 077; ")
	for _, e := range s.Env {
		fmt.Fprintf(&cmd, "%s=%s ", e.Name, shQuote(e.Value))
	}
	cmd.WriteString("exec")
	for _, a := range s.Command {
		cmd.WriteString(" " + shQuote(a))
	}
	fmt.Fprintf(&cmd, " >>%s 2>&1", shQuote(logFile))
	// In a crontab an unescaped % ends the command (the rest is stdin).
	line := strings.ReplaceAll(cmd.String(), "%", `\%`)
	if m == System {
		return spec + " " + user + " " + line
	}
	return spec + " " + line
}

// CronFile renders the /etc/cron.d file (system mode).
func (s Schedule) CronFile(user, logFile string) string {
	return fmt.Sprintf("%s\n# %s, every %s.\n%s\n", managedLine, s.Description, shortDuration(s.Interval), s.CronCommand(System, user, logFile))
}

// CronBlock renders the block of a user's crontab, between marker lines.
func (s Schedule) CronBlock(logFile string) string {
	begin, end := cronMarkers(s.Name)
	return fmt.Sprintf("%s\n# %s, every %s.\n%s\n%s\n", begin, s.Description, shortDuration(s.Interval), s.CronCommand(User, "", logFile), end)
}

func cronMarkers(name string) (begin, end string) {
	return "# BEGIN github-runner-image-builder " + name + " (managed by setup)", "# END github-runner-image-builder " + name
}

// replaceCronBlock returns crontab with the block of name replaced by block
// (appended when absent; removed when block is "").
func replaceCronBlock(crontab, name, block string) string {
	begin, end := cronMarkers(name)
	var out []string
	lines := strings.SplitAfter(crontab, "\n")
	inBlock, placed := false, false
	for _, l := range lines {
		if l == "" {
			continue
		}
		t := strings.TrimRight(l, "\n")
		switch {
		case t == begin:
			inBlock = true
			if !placed && block != "" {
				out = append(out, block)
				placed = true
			}
			continue
		case inBlock && t == end:
			inBlock = false
			continue
		case inBlock:
			continue
		}
		if !strings.HasSuffix(l, "\n") {
			l += "\n"
		}
		out = append(out, l)
	}
	if !placed && block != "" {
		out = append(out, block)
	}
	return strings.Join(out, "")
}

// execQuote quotes one word of a systemd command line or assignment:
// specifiers (%) are doubled, $ is doubled (no variable expansion), and a
// word with other characters than the safe set is double-quoted.
func execQuote(s string) string {
	s = strings.ReplaceAll(s, "%", "%%")
	s = strings.ReplaceAll(s, "$", "$$")
	if s != "" && bareRE.MatchString(s) {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

// envQuote quotes an Environment= assignment: specifiers (%) are doubled;
// $ has no meaning there and is kept.
func envQuote(s string) string {
	s = strings.ReplaceAll(s, "%", "%%")
	if s != "" && bareRE.MatchString(s) {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

// unitEscape makes a free-text value safe in a unit file (specifiers doubled).
func unitEscape(s string) string { return strings.ReplaceAll(s, "%", "%%") }

// shQuote quotes one word for /bin/sh.
func shQuote(s string) string {
	if s != "" && bareRE.MatchString(s) && !strings.Contains(s, "%") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

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
