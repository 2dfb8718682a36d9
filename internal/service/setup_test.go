package service

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/service/install"
)

const testClouds = `clouds:
  build: {auth: {auth_url: "http://127.0.0.1:5000/v3", username: u, password: "pw-secret"}}
  c1: {auth: {auth_url: "http://127.0.0.1:5000/v3", username: u1, password: "pw-secret"}}
  c2: {auth: {auth_url: "http://127.0.0.1:5000/v3", username: u2, password: "pw-secret"}}
`

func setupOptions(t *testing.T, root string, sched install.Scheduler) SetupOptions {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return SetupOptions{Root: root, Mode: install.System, Scheduler: sched, User: "root",
		CloudsYAML: []byte(testClouds), Binary: exe}
}

func modeOf(t *testing.T, p string) os.FileMode {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func read(t *testing.T, p string) string {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestSetupSystemd(t *testing.T) {
	cfg := testConfig(t, "")
	s, _, _, _ := testService(t, cfg)
	in := &fakeInit{}
	s.Init = in
	root := t.TempDir()
	o := setupOptions(t, root, install.Systemd)

	rep, err := s.Setup(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	clouds := filepath.Join(root, "etc/github-runner-image-builder/clouds.yaml")
	if read(t, clouds) != testClouds || modeOf(t, clouds) != 0o600 || modeOf(t, filepath.Dir(clouds)) != 0o700 || !rep.CloudsWritten {
		t.Errorf("clouds.yaml: mode %v, dir %v, written %v", modeOf(t, clouds), modeOf(t, filepath.Dir(clouds)), rep.CloudsWritten)
	}
	if len(in.specs) != 1 || len(in.specs[0].Bases) != 2 || !strings.HasPrefix(rep.Init, "seeded x64 (jammy, noble)") {
		t.Errorf("init %q %+v", rep.Init, in.specs)
	}
	svc := filepath.Join(root, "etc/systemd/system/github-runner-image-builder-grib.service")
	tmr := filepath.Join(root, "etc/systemd/system/github-runner-image-builder-grib.timer")
	unit := read(t, svc)
	for _, want := range []string{
		"\nType=oneshot\n",
		"\nExecStart=" + o.Binary + " build --config " + cfg.Path + "\n",
		"\nEnvironment=OS_CLIENT_CONFIG_FILE=/etc/github-runner-image-builder/clouds.yaml\n",
		"\nEnvironment=XDG_STATE_HOME=/var/lib\n",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("service lacks %q:\n%s", want, unit)
		}
	}
	timer := read(t, tmr)
	if !strings.Contains(timer, "\nOnCalendar=*-*-* 00/6:00:00\nPersistent=true\n") {
		t.Errorf("timer:\n%s", timer)
	}
	if modeOf(t, svc) != 0o644 || modeOf(t, tmr) != 0o644 {
		t.Errorf("unit modes %v %v", modeOf(t, svc), modeOf(t, tmr))
	}
	verifyUnits(t, svc, tmr)
	wantSkipped := []string{"systemctl daemon-reload", "systemctl enable github-runner-image-builder-grib.timer", "systemctl restart github-runner-image-builder-grib.timer"}
	if !slices.Equal(rep.Schedule.Skipped, wantSkipped) || len(rep.Schedule.Ran) != 0 {
		t.Errorf("commands under a root: ran %q skipped %q", rep.Schedule.Ran, rep.Schedule.Skipped)
	}

	// The same again changes nothing, and seeds nothing.
	before := []string{stamp(t, clouds), stamp(t, svc), stamp(t, tmr)}
	rep, err = s.Setup(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.CloudsWritten || rep.Schedule.Changed() || len(in.specs) != 1 || !strings.HasPrefix(rep.Init, "not needed") {
		t.Errorf("second setup: %+v, %d inits", rep, len(in.specs))
	}
	if after := []string{stamp(t, clouds), stamp(t, svc), stamp(t, tmr)}; !slices.Equal(before, after) {
		t.Errorf("files touched: %v -> %v", before, after)
	}

	// A new interval changes only the timer.
	s.Config.Interval = 2 * time.Hour
	rep, err = s.Setup(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.CloudsWritten || !slices.Equal(rep.Schedule.Written, []string{tmr}) || stamp(t, svc) != before[1] {
		t.Errorf("interval change: %+v", rep)
	}
	if !strings.Contains(read(t, tmr), "\nOnCalendar=*-*-* 00/2:00:00\n") {
		t.Errorf("timer:\n%s", read(t, tmr))
	}
}

func stamp(t *testing.T, p string) string {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.ModTime().String() + " " + st.Mode().String()
}

func verifyUnits(t *testing.T, files ...string) {
	t.Helper()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("GRIB_IT") == "" && os.Getenv("CI") == "" {
			t.Log("systemd-analyze is not installed: units not verified")
			return
		}
		t.Fatal("systemd-analyze is missing: .ci/run installs systemd")
	}
	cmd := exec.Command(analyze, append([]string{"verify", "--man=no"}, files...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=notice")
	out, err := cmd.CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		for _, f := range files {
			if strings.Contains(l, filepath.Base(f)) {
				t.Errorf("systemd-analyze verify: %s", l)
			}
		}
	}
	if err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestSetupCron(t *testing.T) {
	cfg := testConfig(t, "schedule: {interval: 15m, base_image_refresh: 0s}\n")
	s, _, _, _ := testService(t, cfg)
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc/cron.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	o := setupOptions(t, root, "") // auto: no systemd in this root, cron.d exists
	o.SkipInit = true
	rep, err := s.Setup(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	cron := filepath.Join(root, "etc/cron.d/github-runner-image-builder-grib")
	if rep.Scheduler != install.Cron || modeOf(t, cron) != 0o644 || rep.Init != "skipped (--skip-init)" {
		t.Fatalf("report %+v", rep)
	}
	log := "/var/log/github-runner-image-builder/github-runner-image-builder-grib.log"
	want := "*/15 * * * * root umask 077; OS_CLIENT_CONFIG_FILE=/etc/github-runner-image-builder/clouds.yaml XDG_STATE_HOME=/var/lib XDG_CACHE_HOME=/var/cache exec " +
		o.Binary + " build --config " + cfg.Path + " >>" + log + " 2>&1\n"
	if got := read(t, cron); !strings.HasSuffix(got, "\n"+want) {
		t.Errorf("cron file:\n%s\nwant its last line:\n%s", got, want)
	}
	if modeOf(t, filepath.Join(root, filepath.Dir(log))) != 0o700 {
		t.Error("log directory not 0700")
	}
	before := stamp(t, cron)
	if rep, err = s.Setup(t.Context(), o); err != nil || rep.Schedule.Changed() || rep.CloudsWritten || stamp(t, cron) != before {
		t.Errorf("second setup: %+v %v", rep, err)
	}
}

func TestSetupRefusals(t *testing.T) {
	s, _, _, _ := testService(t, testConfig(t, ""))
	root := t.TempDir()
	o := setupOptions(t, root, install.Systemd)
	o.SkipInit = true
	o.CloudsYAML = []byte("clouds:\n  build: {auth: {password: pw-secret}}\n  c1: {}\n")
	_, err := s.Setup(t.Context(), o)
	if !errs.Is(err, errs.KindUsage) || !strings.Contains(err.Error(), `names cloud "c2", which it does not define (it defines build, c1)`) || strings.Contains(err.Error(), "pw-secret") {
		t.Errorf("missing cloud: %v", err)
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("a refused setup wrote %v", entries)
	}
	// An auth_type every build would refuse is refused at setup, naming it.
	o.CloudsYAML = []byte(strings.Replace(testClouds, "c1: {auth:", "c1: {auth_type: v3oidcpassword, auth:", 1))
	if _, err := s.Setup(t.Context(), o); !errs.Is(err, errs.KindUsage) || !strings.Contains(err.Error(), `auth_type "v3oidcpassword" is not supported`) || strings.Contains(err.Error(), "pw-secret") {
		t.Errorf("unsupported auth_type: %v", err)
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("a refused setup wrote %v", entries)
	}
	o.CloudsYAML = []byte("clouds: [\n  password: pw-secret")
	if _, err := s.Setup(t.Context(), o); !errs.Is(err, errs.KindUsage) || strings.Contains(err.Error(), "pw-secret") {
		t.Errorf("bad yaml: %v", err)
	}
	o = setupOptions(t, root, "")
	o.SkipInit = true
	if _, err := s.Setup(t.Context(), o); !errs.Is(err, errs.KindUsage) || !strings.Contains(err.Error(), "neither systemd nor cron") {
		t.Errorf("no scheduler: %v", err)
	}
	if err := os.MkdirAll(filepath.Join(root, "run/systemd/system"), 0o755); err != nil {
		t.Fatal(err)
	}
	if rep, err := s.Setup(t.Context(), o); err != nil || rep.Scheduler != install.Systemd {
		t.Errorf("systemd detection: %+v %v", rep, err)
	}
	// A secret file others can read is refused at setup, not at the first build.
	dir := t.TempDir()
	loose := filepath.Join(dir, "tok")
	if err := os.WriteFile(loose, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	s2, _, _, _ := testService(t, testConfig(t, "script:\n  secrets:\n    T: {file: "+loose+"}\n"))
	if _, err := s2.Setup(t.Context(), o); err == nil || !strings.Contains(err.Error(), "others may read it") {
		t.Errorf("loose secret: %v", err)
	}
}
