package install

import (
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func TestIntervalSpecs(t *testing.T) {
	tests := []struct {
		d         time.Duration
		cal, cron string
	}{
		{time.Minute, "*-*-* *:*:00", "* * * * *"},
		{15 * time.Minute, "*-*-* *:00/15:00", "*/15 * * * *"},
		{30 * time.Minute, "*-*-* *:00/30:00", "*/30 * * * *"},
		{time.Hour, "*-*-* *:00:00", "0 * * * *"},
		{6 * time.Hour, "*-*-* 00/6:00:00", "0 */6 * * *"},
		{5 * time.Hour, "*-*-* 00/5:00:00", "0 */5 * * *"},
		{24 * time.Hour, "*-*-* 00:00:00", "0 0 * * *"},
	}
	for _, tt := range tests {
		cal, cron, err := specs(tt.d)
		if err != nil || cal != tt.cal || cron != tt.cron {
			t.Errorf("%s: %q %q %v, want %q %q", tt.d, cal, cron, err, tt.cal, tt.cron)
		}
	}
	for _, bad := range []time.Duration{0, 30 * time.Second, 7 * time.Minute, 90 * time.Minute, 25 * time.Hour, 6*time.Hour + time.Second} {
		if err := ValidateInterval(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func testSchedule() Schedule {
	return Schedule{
		Name:        "github-runner-image-builder-grib",
		Description: "Build GitHub runner images of grib (100% automatic)",
		Interval:    6 * time.Hour,
		Command:     []string{"/usr/local/bin/github-runner-image-builder", "build", "--config", "/etc/grib/my config.yaml"},
		Env: []EnvVar{{"OS_CLIENT_CONFIG_FILE", "/etc/github-runner-image-builder/clouds.yaml"},
			{"XDG_STATE_HOME", "/var/lib"}, {"ODD", `a"b$c%d'e`}},
		TimeoutStart: 6*time.Hour + 15*time.Minute,
		TimeoutStop:  15 * time.Minute,
	}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file:\n%s", name, got)
	}
}

func TestRenderGolden(t *testing.T) {
	s := testSchedule()
	golden(t, "system.service", s.ServiceUnit(System))
	golden(t, "user.service", s.ServiceUnit(User))
	golden(t, "grib.timer", s.TimerUnit())
	golden(t, "cron.d", s.CronFile("root", "/var/log/github-runner-image-builder/grib.log"))
	golden(t, "crontab-block", s.CronBlock("/home/u/.local/state/grib.log"))
}

// The cron command must survive /bin/sh with every odd character, and
// crontab's % handling: run it through sh after undoing cron's \% escape.
func TestCronCommandRunsInShell(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "args")
	script := filepath.Join(dir, "prog")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nprintf '%s\\n' \"$ODD\" \"$@\" > "+out+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := testSchedule()
	s.Command = []string{script, "build", "--config", "/etc/grib/my config.yaml", "100%", "it's"}
	line := s.CronCommand(User, "", filepath.Join(dir, "log"))
	cmd := strings.TrimPrefix(line, "0 */6 * * * ")
	cmd = strings.ReplaceAll(cmd, `\%`, "%") // what cron does before handing it to sh
	if b, err := exec.Command("/bin/sh", "-c", cmd).CombinedOutput(); err != nil {
		t.Fatalf("sh: %v %s", err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want := "a\"b$c%d'e\nbuild\n--config\n/etc/grib/my config.yaml\n100%\nit's\n"
	if string(got) != want {
		t.Errorf("args %q, want %q", got, want)
	}
	if st, err := os.Stat(filepath.Join(dir, "log")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("log file: %v %v (want 0600)", st, err)
	}
}

// The rendered units pass systemd-analyze verify (with the program path
// pointing at a real executable, as verify checks it).
func TestUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("GRIB_IT") == "" && os.Getenv("CI") == "" {
			t.Skip("systemd-analyze is not installed")
		}
		t.Fatal("systemd-analyze is missing: .ci/run installs systemd")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []Mode{System, User} {
		t.Run(string(mode), func(t *testing.T) {
			s := testSchedule()
			s.Command[0] = exe
			dir := t.TempDir()
			svc := filepath.Join(dir, s.Name+".service")
			tmr := filepath.Join(dir, s.Name+".timer")
			if err := os.WriteFile(svc, []byte(s.ServiceUnit(mode)), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(tmr, []byte(s.TimerUnit()), 0o644); err != nil {
				t.Fatal(err)
			}
			VerifyUnits(t, analyze, mode, svc, tmr)
		})
	}
}

// VerifyUnits runs systemd-analyze verify on unit files and fails t on an
// error or on any message about them.
func VerifyUnits(t *testing.T, analyze string, mode Mode, files ...string) {
	t.Helper()
	args := []string{"verify", "--man=no"}
	if mode == User {
		args = append(args, "--user")
	}
	cmd := exec.Command(analyze, append(args, files...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=notice", "XDG_RUNTIME_DIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	var ours []string
	for _, l := range strings.Split(string(out), "\n") {
		for _, f := range files {
			if strings.Contains(l, filepath.Base(f)) {
				ours = append(ours, l)
			}
		}
	}
	if err != nil || len(ours) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// fakeCommander records commands and serves `crontab -l` from memory.
type fakeCommander struct {
	ran     []string
	crontab string
	hasTab  bool
}

func (f *fakeCommander) Run(_ context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	line := strings.Join(append([]string{name}, args...), " ")
	f.ran = append(f.ran, line)
	switch line {
	case "crontab -l":
		if !f.hasTab {
			return []byte("no crontab for u\n"), &exec.ExitError{}
		}
		return []byte(f.crontab), nil
	case "crontab -":
		f.crontab, f.hasTab = string(stdin), true
	}
	return nil, nil
}

func systemTarget(root string, cmds Commander) Target {
	return Target{Root: root, Mode: System, User: "root", UnitDir: "/etc/systemd/system", CronDir: "/etc/cron.d", Commands: cmds}
}

func TestInstallSystemdIdempotent(t *testing.T) {
	root := t.TempDir()
	ctx := t.Context()
	fc := &fakeCommander{}
	tg := systemTarget(root, fc)
	s := testSchedule()

	r, err := Install(ctx, tg, Systemd, s, "")
	if err != nil {
		t.Fatal(err)
	}
	svc, tmr := tg.ServicePath(s.Name), tg.TimerPath(s.Name)
	if !slices.Equal(r.Written, []string{svc, tmr}) {
		t.Errorf("written %q", r.Written)
	}
	wantRan := []string{"systemctl daemon-reload", "systemctl enable " + s.Name + ".timer", "systemctl restart " + s.Name + ".timer"}
	if !slices.Equal(fc.ran, wantRan) {
		t.Errorf("ran %q, want %q", fc.ran, wantRan)
	}
	for _, p := range []string{svc, tmr} {
		st, err := os.Stat(p)
		if err != nil || st.Mode().Perm() != 0o644 {
			t.Errorf("%s: %v %v", p, st, err)
		}
	}
	before := statAll(t, svc, tmr)

	// The same again: nothing written, only the idempotent enable.
	fc.ran = nil
	r, err = Install(ctx, tg, Systemd, s, "")
	if err != nil {
		t.Fatal(err)
	}
	if r.Changed() || !slices.Equal(fc.ran, []string{"systemctl enable --now " + s.Name + ".timer"}) {
		t.Errorf("second install changed %+v, ran %q", r, fc.ran)
	}
	if after := statAll(t, svc, tmr); !slices.Equal(before, after) {
		t.Errorf("files touched: %v -> %v", before, after)
	}

	// A new interval rewrites only the timer.
	fc.ran = nil
	s.Interval = time.Hour
	r, err = Install(ctx, tg, Systemd, s, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Written, []string{tmr}) || !slices.Equal(fc.ran, wantRan) {
		t.Errorf("interval change wrote %q ran %q", r.Written, fc.ran)
	}
	if data, _ := os.ReadFile(tmr); !strings.Contains(string(data), "OnCalendar=*-*-* *:00:00\n") {
		t.Errorf("timer not updated:\n%s", data)
	}
	if after := statAll(t, svc); after[0] != before[0] {
		t.Errorf("service rewritten")
	}
}

func statAll(t *testing.T, paths ...string) []string {
	t.Helper()
	var out []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, st.ModTime().String()+st.Mode().String())
	}
	return out
}

// Switching schedulers leaves only one: systemd → cron removes the units
// (after disabling the timer), and back.
func TestInstallSwitchScheduler(t *testing.T) {
	root := t.TempDir()
	fc := &fakeCommander{}
	tg := systemTarget(root, fc)
	s := testSchedule()
	if _, err := Install(t.Context(), tg, Systemd, s, "/var/log/grib.log"); err != nil {
		t.Fatal(err)
	}
	fc.ran = nil
	r, err := Install(t.Context(), tg, Cron, s, "/var/log/grib.log")
	if err != nil {
		t.Fatal(err)
	}
	cron := tg.CronPath(s.Name)
	if !slices.Equal(r.Written, []string{cron}) || len(r.Removed) != 2 {
		t.Errorf("report %+v", r)
	}
	if !slices.Equal(fc.ran, []string{"systemctl disable --now " + s.Name + ".timer", "systemctl daemon-reload"}) {
		t.Errorf("ran %q", fc.ran)
	}
	if exists(tg.ServicePath(s.Name)) || exists(tg.TimerPath(s.Name)) {
		t.Error("units left behind")
	}
	st, err := os.Stat(cron)
	if err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("cron file %v %v", st, err)
	}
	data, _ := os.ReadFile(cron)
	if !strings.Contains(string(data), "\n0 */6 * * * root umask 077; ") {
		t.Errorf("cron file:\n%s", data)
	}
	// Back to systemd: the cron file goes.
	r, err = Install(t.Context(), tg, Systemd, s, "")
	if err != nil || !slices.Equal(r.Removed, []string{cron}) || exists(cron) {
		t.Errorf("back to systemd: %+v %v", r, err)
	}
}

func TestInstallUserModes(t *testing.T) {
	s := testSchedule()
	userTarget := func(root string, cmds Commander) Target {
		return Target{Root: root, Mode: User, User: "u", UnitDir: "/home/u/.config/systemd/user", Commands: cmds}
	}
	t.Run("systemd with linger", func(t *testing.T) {
		fc := &fakeCommander{}
		if _, err := Install(t.Context(), userTarget(t.TempDir(), fc), Systemd, s, ""); err != nil {
			t.Fatal(err)
		}
		want := []string{"crontab -l", "loginctl enable-linger u", "systemctl --user daemon-reload",
			"systemctl --user enable " + s.Name + ".timer", "systemctl --user restart " + s.Name + ".timer"}
		slices.Sort(want)
		got := slices.Sorted(slices.Values(fc.ran))
		if !slices.Equal(got, want) {
			t.Errorf("ran %q, want %q", got, want)
		}
	})
	t.Run("crontab keeps other lines", func(t *testing.T) {
		fc := &fakeCommander{crontab: "MAILTO=me\n0 1 * * * /bin/backup\n", hasTab: true}
		tg := userTarget(t.TempDir(), fc)
		for i := range 2 {
			if _, err := Install(t.Context(), tg, Cron, s, "/home/u/log"); err != nil {
				t.Fatal(err)
			}
			if got := strings.Count(fc.crontab, "# BEGIN github-runner-image-builder"); got != 1 {
				t.Errorf("run %d: %d blocks:\n%s", i, got, fc.crontab)
			}
		}
		if !strings.HasPrefix(fc.crontab, "MAILTO=me\n0 1 * * * /bin/backup\n# BEGIN") {
			t.Errorf("crontab:\n%s", fc.crontab)
		}
		if n := slices.Index(fc.ran, "crontab -"); n < 0 || slices.Index(fc.ran[n+1:], "crontab -") >= 0 {
			t.Errorf("crontab written %q (want once: the second run changes nothing)", fc.ran)
		}
		if _, err := Install(t.Context(), tg, Systemd, s, ""); err != nil {
			t.Fatal(err)
		}
		if fc.crontab != "MAILTO=me\n0 1 * * * /bin/backup\n" {
			t.Errorf("block not removed:\n%s", fc.crontab)
		}
	})
	t.Run("crontab spool under a root", func(t *testing.T) {
		root := t.TempDir()
		tg := userTarget(root, nil)
		r, err := Install(t.Context(), tg, Cron, s, "/home/u/log")
		if err != nil {
			t.Fatal(err)
		}
		spool := filepath.Join(root, "var/spool/cron/crontabs/u")
		st, err := os.Stat(spool)
		if err != nil || st.Mode().Perm() != 0o600 || !slices.Equal(r.Written, []string{spool}) {
			t.Errorf("spool %v %v %+v", st, err, r)
		}
	})
}

func TestWriteIfChanged(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "f")
	for i, tt := range []struct {
		data  string
		perm  os.FileMode
		wrote bool
	}{{"a", 0o600, true}, {"a", 0o600, false}, {"a", 0o644, true}, {"b", 0o644, true}, {"b", 0o644, false}} {
		wrote, err := WriteIfChanged(p, []byte(tt.data), tt.perm)
		if err != nil || wrote != tt.wrote {
			t.Errorf("step %d: wrote %v %v, want %v", i, wrote, err, tt.wrote)
		}
		st, _ := os.Stat(p)
		if st.Mode().Perm() != tt.perm {
			t.Errorf("step %d: mode %v", i, st.Mode())
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}

// The shell command of the cron entry passes shellcheck.
func TestCronCommandShellcheck(t *testing.T) {
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		if os.Getenv("GRIB_IT") == "" && os.Getenv("CI") == "" {
			t.Skip("shellcheck is not installed")
		}
		t.Fatal("shellcheck is missing: .ci/run installs it")
	}
	s := testSchedule()
	for _, line := range []string{
		strings.TrimPrefix(s.CronCommand(System, "root", "/var/log/x.log"), "0 */6 * * * root "),
		strings.TrimPrefix(s.CronCommand(User, "", "/home/u/x.log"), "0 */6 * * * "),
	} {
		script := "#!/bin/sh\n" + strings.ReplaceAll(line, `\%`, "%") + "\n"
		cmd := exec.Command(sc, "-s", "sh", "-S", "warning", "-") // SC2016 (info) flags the deliberately literal $ of ODD
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("shellcheck: %v\n%s\n%s", err, script, out)
		}
	}
}

// systemctl, loginctl and crontab get a minimal environment: what they
// need (PATH, and XDG_RUNTIME_DIR for `systemctl --user`), no secret.
func TestExecCommanderGivesNoSecret(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	secrets := map[string]string{"IMAGE_BUILDER_SECRET_X": "leak-script-secret", "GITHUB_TOKEN": "leak-token",
		"OS_PASSWORD": "leak-password", "OS_TOKEN": "leak-os-token"}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/4242")
	out, err := ExecCommander{}.Run(t.Context(), nil, sh, "-c", "env")
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range secrets {
		if strings.Contains(string(out), v) {
			t.Errorf("the command saw %s", k)
		}
	}
	for _, want := range []string{"PATH=", "XDG_RUNTIME_DIR=/run/user/4242"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the command lacks %s:\n%s", want, out)
		}
	}
}
