package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/manifest"
)

func callbackConfig(t *testing.T, dir string, extra string) *Config {
	cb := callbackScript(t, dir)
	return testConfig(t, fmt.Sprintf("callback: {on_success: [%s, ok], on_failure: [%s, failed]}\nlatest_file: %s\n%s",
		cb, cb, filepath.Join(dir, "latest.json"), extra))
}

func TestBuildTwoCellsHandsImagesOnce(t *testing.T) {
	dir := t.TempDir()
	s, b, _, _ := testService(t, callbackConfig(t, dir, ""))
	s.Environ = append(s.Environ, "IMAGE_BUILDER_SECRET_X=leak1", "GITHUB_TOKEN=leak2", "OS_PASSWORD=leak3", "OS_TOKEN=leak4",
		"OS_APPLICATION_CREDENTIAL_SECRET=leak5", "OS_CLOUD=other", "KEEP=not-for-callbacks", "LANG=C.UTF-8", "https_proxy=http://127.0.0.1:3128")
	s.Metrics = NewMetrics(false, s.Now)

	rep, err := s.Build(t.Context(), BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(b.specs()) != 2 || len(rep.Built()) != 2 {
		t.Fatalf("built %d cells, report %+v", len(b.specs()), rep)
	}
	var ids []string
	for _, c := range rep.Cells {
		for _, im := range c.Images {
			ids = append(ids, im.ID)
		}
	}
	if countCalls(t, dir) != 1 {
		t.Fatalf("callback ran %d times, want once", countCalls(t, dir))
	}
	if got := readCall(t, dir, 0, "args"); got != "ok\n"+strings.Join(ids, "\n")+"\n" {
		t.Errorf("callback args %q, want ok and %q", got, ids)
	}
	var in callbackInput
	if err := json.Unmarshal([]byte(readCall(t, dir, 0, "stdin")), &in); err != nil {
		t.Fatal(err)
	}
	if in.Result != "success" || len(in.Images) != 4 || in.Images[0] != (CallbackImage{Cloud: "c1", Base: "jammy", Arch: "x64", Name: "grib-jammy-x64", ID: ids[0]}) {
		t.Errorf("callback stdin %+v", in)
	}
	env := readCall(t, dir, 0, "env")
	for _, v := range strings.Split(strings.TrimSpace(env), "\n") {
		k, _, _ := strings.Cut(v, "=")
		if strings.Contains(v, "leak") || k == "KEEP" || strings.HasPrefix(k, "OS_") {
			t.Errorf("the callback saw %s: it gets only the documented variables", v)
		}
	}
	for _, want := range []string{"PATH=", "LANG=C.UTF-8", "https_proxy=http://127.0.0.1:3128"} {
		if !strings.Contains(env, want) {
			t.Errorf("the callback lacks %s:\n%s", want, env)
		}
	}

	// The latest file carries the charm's relation shape.
	data, err := os.ReadFile(filepath.Join(dir, "latest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc LatestDocument
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	c2 := doc.Clouds["c2"]
	if c2.ID != ids[1] || c2.Tags != "x64,jammy" || len(c2.Images) != 2 || c2.Images[1].ID != ids[3] || c2.Images[1].Tags != "x64,noble" {
		t.Errorf("latest file %s", data)
	}
	// Each image's manifest: its SHA-256 in the latest file, its bytes kept
	// beside it, one file per image revision.
	for _, c := range rep.Cells {
		want := fakeManifest(c.ImageName)
		for _, im := range c.Images {
			kept, err := os.ReadFile(filepath.Join(LatestManifestsDir(filepath.Join(dir, "latest.json")), im.ID+".json"))
			if err != nil || string(kept) != string(want) {
				t.Errorf("manifest kept for %s: %q, %v; want %q", im.ID, kept, err, want)
			}
		}
	}
	if got := c2.Images[1].ManifestSHA256; got != manifest.SHA256(fakeManifest("grib-noble-x64")) {
		t.Errorf("latest file: manifest_sha256 %q of %s", got, c2.Images[1].ID)
	}

	// Both images are now the ones handed to consumers: protected next time.
	if _, err := s.Build(t.Context(), BuildOptions{}); err != nil {
		t.Fatal(err)
	}
	protect := b.specs()[2].Protect
	slices.Sort(protect)
	want := slices.Clone(ids)
	slices.Sort(want)
	if !slices.Equal(protect, want) {
		t.Errorf("Protect %q, want %q", protect, want)
	}

	path := filepath.Join(dir, "m.prom")
	if err := s.Metrics.WriteTextfile(path); err != nil {
		t.Fatal(err)
	}
	prom, _ := os.ReadFile(path)
	for _, want := range []string{
		`github_runner_image_builder_builds_total{result="success"} 4`,
		`github_runner_image_builder_runner_version_info{name="grib-noble-x64",version="2.330.0"} 1`,
		`github_runner_image_builder_image_created_timestamp_seconds{arch="x64",base="noble",cloud="c2",name="grib-noble-x64"} 1.7776368e+09`,
		`github_runner_image_builder_last_success_timestamp_seconds 1.7776368e+09`,
		`github_runner_image_builder_phase_duration_seconds_count{phase="build"} 4`,
		`github_runner_image_builder_phase_duration_seconds_count{phase="callback"} 2`,
	} {
		if !strings.Contains(string(prom), want+"\n") {
			t.Errorf("metrics lack %s:\n%s", want, prom)
		}
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Errorf("textfile mode %v", st.Mode())
	}
}

// A failing callback leaves the images handed before it protected.
func TestBuildCallbackFailureKeepsHandedImages(t *testing.T) {
	dir := t.TempDir()
	s, b, _, _ := testService(t, callbackConfig(t, dir, ""))
	rep, err := s.Build(t.Context(), BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var first []string
	for _, c := range rep.Cells {
		for _, im := range c.Images {
			first = append(first, im.ID)
		}
	}
	setCallbackExit(t, dir, 3)
	_, err = s.Build(t.Context(), BuildOptions{})
	if errs.ExitCode(err) != 11 || !strings.Contains(err.Error(), "success callback "+filepath.Join(dir, "callback.sh")+" exit status 3") {
		t.Fatalf("error %v (exit %d), want the callback's, exit 11", err, errs.ExitCode(err))
	}
	if countCalls(t, dir) != 2 {
		t.Errorf("callback calls %d", countCalls(t, dir))
	}
	// Third build: the protected images are still the first build's.
	setCallbackExit(t, dir, 0)
	if _, err := s.Build(t.Context(), BuildOptions{}); err != nil {
		t.Fatal(err)
	}
	protect := b.specs()[4].Protect
	slices.Sort(protect)
	slices.Sort(first)
	if !slices.Equal(protect, first) {
		t.Errorf("after a failed callback Protect is %q, want the first build's %q", protect, first)
	}
}

func TestBuildPartialFailure(t *testing.T) {
	dir := t.TempDir()
	s, b, _, _ := testService(t, callbackConfig(t, dir, ""))
	b.fail = func(spec config.RunSpec, _ int) error {
		if spec.Base == config.BaseJammy {
			return errs.New(errs.KindBuild, "cloud-init failed on the builder")
		}
		return nil
	}
	rep, err := s.Build(t.Context(), BuildOptions{})
	if errs.ExitCode(err) != 10 || !strings.Contains(err.Error(), "1 of 2 image builds failed: grib-jammy-x64: cloud-init failed") {
		t.Fatalf("error %v (exit %d), want partial (10)", err, errs.ExitCode(err))
	}
	built := rep.Built()
	if len(built) != 1 || built[0].ImageName != "grib-noble-x64" || len(built[0].Images) != 2 {
		t.Errorf("built %+v", built)
	}
	if rep.Cells[0].ExitCode != 6 || rep.Cells[0].Error == "" {
		t.Errorf("failed cell %+v", rep.Cells[0])
	}
	// Success callback with the noble images, failure callback with jammy.
	if countCalls(t, dir) != 2 {
		t.Fatalf("callbacks %d", countCalls(t, dir))
	}
	calls := map[string]string{}
	for n := range 2 {
		args := readCall(t, dir, n, "args")
		calls[strings.SplitN(args, "\n", 2)[0]] = args
		if strings.HasPrefix(args, "failed") {
			var in callbackInput
			if err := json.Unmarshal([]byte(readCall(t, dir, n, "stdin")), &in); err != nil {
				t.Fatal(err)
			}
			if len(in.Failures) != 1 || in.Failures[0].Kind != "build-failed" || in.Failures[0].ExitCode != 6 {
				t.Errorf("failure input %+v", in)
			}
		}
	}
	if calls["failed"] != "failed\ngrib-jammy-x64\n" || !strings.Contains(calls["ok"], built[0].Images[0].ID) {
		t.Errorf("callbacks %q", calls)
	}
}

func TestBuildRetries(t *testing.T) {
	reset := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	http := func(code int) error {
		return fmt.Errorf("create server: %w", gophercloud.ErrUnexpectedResponseCode{Actual: code})
	}
	tests := []struct {
		name     string
		errs     []error // the first attempts' errors; then success
		attempts int
		wantKind errs.Kind // of the final error; KindInternal = no error
		ok       bool
	}{
		{"503 then ok", []error{http(503), http(502)}, 3, 0, true},
		{"reset then ok", []error{errs.Wrap(errs.KindBuild, reset, "boot")}, 2, 0, true},
		{"400 not retried", []error{errs.Wrap(errs.KindBuild, http(400), "bad")}, 1, errs.KindBuild, false},
		{"404 not retried", []error{errs.Wrap(errs.KindNotFound, http(404), "flavor")}, 1, errs.KindNotFound, false},
		{"retries run out", []error{http(500), http(500), http(500), http(500)}, 3, errs.KindInternal, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, b, _, _ := testService(t, testConfig(t, "retry: {attempts: 3, min_delay: 1ms, max_delay: 3ms}\nmatrix: {bases: [noble], arches: [x64]}\n"))
			var sleeps sleepLog
			s.Sleep = sleeps.sleep
			b.fail = func(_ config.RunSpec, n int) error {
				if n <= len(tt.errs) {
					return tt.errs[n-1]
				}
				return nil
			}
			rep, err := s.Build(t.Context(), BuildOptions{})
			if (err == nil) != tt.ok || (!tt.ok && errs.KindOf(err) != tt.wantKind) {
				t.Fatalf("error %v (kind %v)", err, errs.KindOf(err))
			}
			if got := rep.Cells[0].Attempts; got != tt.attempts || len(b.specs()) != tt.attempts {
				t.Errorf("attempts %d (builds %d), want %d", got, len(b.specs()), tt.attempts)
			}
			var want []time.Duration
			for i := 1; i < tt.attempts; i++ {
				want = append(want, min(time.Millisecond<<(i-1), 3*time.Millisecond))
			}
			if !slices.Equal(sleeps.d, want) {
				t.Errorf("backoff %v, want %v", sleeps.d, want)
			}
		})
	}
}

func TestBuildLockedByAnotherBuild(t *testing.T) {
	cfg := testConfig(t, "")
	s1, b1, _, _ := testService(t, cfg)
	b1.gate, b1.started = make(chan struct{}), make(chan string, 2)
	done := make(chan error, 1)
	go func() {
		_, err := s1.Build(t.Context(), BuildOptions{})
		done <- err
	}()
	<-b1.started // the first build holds its locks and is building

	s2, b2, _, _ := testService(t, cfg)
	_, err := s2.Build(t.Context(), BuildOptions{})
	want := fmt.Sprintf("build of grib-jammy-x64 in progress (pid %d); pass --wait to wait for it", os.Getpid())
	if errs.ExitCode(err) != 9 || err.Error() != want {
		t.Errorf("second build: %v (exit %d), want %q (exit 9)", err, errs.ExitCode(err), want)
	}
	if len(b2.specs()) != 0 {
		t.Error("the locked build built something")
	}

	// With --wait the third waits for the first, then builds.
	s3, b3, _, _ := testService(t, cfg)
	b3.started = make(chan string, 2)
	waited := make(chan error, 1)
	go func() {
		_, err := s3.Build(t.Context(), BuildOptions{Wait: true})
		waited <- err
	}()
	select {
	case name := <-b3.started:
		t.Fatalf("the waiting build started %s while the first holds the lock", name)
	case err := <-waited:
		t.Fatalf("the waiting build ended early: %v", err)
	case <-s3short(t):
	}
	close(b1.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil || len(b3.specs()) != 2 {
		t.Errorf("waiting build: %v, built %d", err, len(b3.specs()))
	}
	st, _ := stateStore{dir: filepath.Join(cfg.StateDir, "service")}.Load()
	if st.Builds[resultLocked] != 2 || st.Builds[resultSuccess] != 4 {
		t.Errorf("counts %v", st.Builds)
	}
}

// s3short gives a waiting goroutine a moment to (wrongly) proceed.
func s3short(t *testing.T) <-chan time.Time {
	t.Helper()
	return time.After(300 * time.Millisecond)
}

func TestBuildParallelism(t *testing.T) {
	s, b, _, _ := testService(t, testConfig(t, "parallelism: 2\nmatrix: {bases: [focal, jammy, noble, resolute], arches: [x64]}\n"))
	b.gate, b.started = make(chan struct{}), make(chan string, 4)
	done := make(chan error, 1)
	go func() {
		_, err := s.Build(t.Context(), BuildOptions{})
		done <- err
	}()
	<-b.started
	<-b.started
	select {
	case name := <-b.started:
		t.Errorf("a third build (%s) started with parallelism 2", name)
	case <-s3short(t):
	}
	close(b.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if b.maxActive != 2 || len(b.specs()) != 4 {
		t.Errorf("max concurrent %d, builds %d", b.maxActive, len(b.specs()))
	}
}

func TestBaseImageRefresh(t *testing.T) {
	cfg := testConfig(t, "schedule: {base_image_refresh: 24h}\n")
	s, _, _, clk := testService(t, cfg)
	in := &fakeInit{}
	s.Init = in
	build := func() {
		t.Helper()
		if _, err := s.Build(t.Context(), BuildOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	build() // never seeded: both bases
	build() // seeded an instant ago: nothing
	clk.Add(25 * time.Hour)
	build() // refresh due: both again
	cfg.Bases = append(cfg.Bases, config.BaseResolute)
	build() // a base added to the matrix: only it
	var got []string
	for _, sp := range in.specs {
		got = append(got, fmt.Sprintf("%s/%s/%v", sp.Cloud, sp.Arch, sp.Bases))
	}
	want := []string{"build/x64/[jammy noble]", "build/x64/[jammy noble]", "build/x64/[resolute]"}
	if !slices.Equal(got, want) {
		t.Errorf("inits %q, want %q", got, want)
	}
	if in.specs[0].CacheDir != cfg.CacheDir || in.specs[0].Prefix != "grib" {
		t.Errorf("init spec %+v", in.specs[0])
	}

	// A failed refresh is a warning; the build goes on.
	clk.Add(25 * time.Hour)
	in.err = errors.New("mirror down")
	rep, err := s.Build(t.Context(), BuildOptions{})
	if err != nil || len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "mirror down") || len(rep.Built()) != 3 {
		t.Errorf("report %+v, %v", rep, err)
	}
}

func TestDue(t *testing.T) {
	s, b, cat, clk := testService(t, testConfig(t, "runner: {version: latest}\nschedule: {interval: 6h, base_image_refresh: 0s}\n"))
	s.Resolver = fakeResolver{version: "2.330.0"}
	cells := s.Config.Cells()
	due := func() map[string]string {
		t.Helper()
		d, err := s.Due(t.Context(), cells)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := due(); d["grib-jammy-x64"] != "no image in cloud c1" {
		t.Errorf("empty catalog: %q", d)
	}
	if _, err := s.Build(t.Context(), BuildOptions{}); err != nil {
		t.Fatal(err)
	}
	if d := due(); d["grib-jammy-x64"] != "" || d["grib-noble-x64"] != "" {
		t.Errorf("fresh images: %q", d)
	}
	s.Resolver = fakeResolver{version: "2.331.0"}
	if d := due(); d["grib-noble-x64"] != "runner 2.331.0 was released (the image has 2.330.0)" {
		t.Errorf("new release: %q", d)
	}
	s.Resolver = fakeResolver{version: "2.330.0"}
	clk.Add(6 * time.Hour)
	if d := due(); !strings.HasPrefix(d["grib-jammy-x64"], "the newest image is 6h0m0s old") {
		t.Errorf("old images: %q", d)
	}
	// --if-due builds only what is due.
	cat.mu.Lock()
	cat.images["c2"] = slices.DeleteFunc(cat.images["c2"], func(im imageT) bool { return im.Name == "grib-noble-x64" })
	cat.mu.Unlock()
	clk.Add(-6 * time.Hour)
	before := len(b.specs())
	rep, err := s.Build(t.Context(), BuildOptions{IfDue: true})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(b.specs()) - before; n != 1 || b.specs()[before].ImageName != "grib-noble-x64" {
		t.Errorf("--if-due built %d", n)
	}
	if !rep.Cells[0].Skipped || rep.Cells[1].Due != "no image in cloud c2" {
		t.Errorf("report %+v", rep.Cells)
	}
	cat.err = errs.New(errs.KindUnreachable, "cloud down")
	if _, err := s.Build(t.Context(), BuildOptions{IfDue: true}); errs.ExitCode(err) != 3 {
		t.Errorf("unreachable catalog: %v", err)
	}
}

// A callback that overruns its timeout is killed with its children.
func TestCallbackTimeoutKillsGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	script := filepath.Join(dir, "slow.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nsleep 300 &\necho $! > "+pidFile+"\nwait\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := runCallback(t.Context(), testLogger(t), []string{script}, nil, callbackInput{Result: "success"}, 500*time.Millisecond, nil)
	if errs.ExitCode(err) != 11 || !strings.Contains(err.Error(), "did not finish within 500ms") {
		t.Fatalf("error %v", err)
	}
	data, rerr := os.ReadFile(pidFile)
	if rerr != nil {
		t.Fatal(rerr)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the callback's child %d outlived the timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A missing program is a callback failure too.
	err = runCallback(context.Background(), testLogger(t), []string{filepath.Join(dir, "none")}, nil, callbackInput{Result: "success"}, time.Second, nil)
	if errs.ExitCode(err) != 11 {
		t.Errorf("missing callback: %v", err)
	}
}

// base_image_refresh 0s: a build never runs init, not even for bases it
// has no record of (they may have been seeded outside the service).
func TestBaseImageRefreshNever(t *testing.T) {
	s, _, _, _ := testService(t, testConfig(t, "schedule: {base_image_refresh: 0s}\n"))
	in := &fakeInit{}
	s.Init = in
	if _, err := s.Build(t.Context(), BuildOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(in.specs) != 0 {
		t.Errorf("init ran %+v", in.specs)
	}
}
