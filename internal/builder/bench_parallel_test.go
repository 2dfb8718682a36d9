package builder_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/build"
	. "github.com/runner-image-builder/github-runner-image-builder/internal/builder"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
	"github.com/runner-image-builder/github-runner-image-builder/internal/release"
	"github.com/runner-image-builder/github-runner-image-builder/internal/service"
	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// BenchmarkParallelMatrix runs the service's build (service.Build, as
// `build --config` does, parallelism: 0) of a one-cell matrix and of a
// four-cell matrix (focal, jammy, noble, resolute × x64) with the real
// openstack builder minus the guest steps, against the test OpenStack:
// the base images have no grib_test_guest, so the test Nova makes each
// server ACTIVE without booting anything and snapshots it as 1 MiB. Each
// build publishes to the build cloud and one upload cloud and prunes to
// keep_revisions 1. A one-cell warm-up build (keypair, security group)
// runs first and is not timed.
//
// Metrics: one-cell-s and four-cells-s (the wall time of service.Build),
// four/one (their ratio; issue 17 asks for at most 1.5 on the 2-core
// test machine), parallelism (the automatic parallelism of the four-cell
// build, from its log line).
func BenchmarkParallelMatrix(b *testing.B) {
	if os.Getenv("GRIB_BENCH") != "1" {
		b.Skip("benchmark against the test OpenStack: run bench/run.sh (GRIB_BENCH=1 GRIB_IT=1)")
	}
	testenv.Require(b)
	prefix := testenv.Prefix(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	bases := []config.Base{config.BaseFocal, config.BaseJammy, config.BaseNoble, config.BaseResolute}
	var names []string
	for _, base := range bases {
		names = append(names, config.ImageName(prefix, base, config.ArchX64))
	}
	b.Cleanup(func() { testenv.RemoveBuildLeftovers(b, prefix, names) })

	dir := b.TempDir()
	data := make([]byte, 1<<20)
	_, _ = rand.Read(data)
	baseFile := filepath.Join(dir, "base.raw")
	verify := filepath.Join(dir, "verify.sh")
	userData := filepath.Join(dir, "user-data")
	for path, content := range map[string][]byte{baseFile: data, verify: []byte("#!/bin/sh\ntrue\n"), userData: []byte("#cloud-config\n")} {
		if err := os.WriteFile(path, content, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	buildCloud := testenv.MustConnect(b, ctx, testenv.BuildCloud)
	sum := sha256.Sum256(data)
	for _, base := range bases { // as init stores them: our prefix, the file's SHA-256
		props := map[string]string{PropPrefix: prefix, PropBaseSHA256: hex.EncodeToString(sum[:])}
		if _, err := testenv.UploadImage(ctx, buildCloud.Image, config.BaseImageName(prefix, base, config.ArchX64), baseFile, "raw", props); err != nil {
			b.Fatal(err)
		}
	}

	vars := map[string]string{
		"OS_CLIENT_CONFIG_FILE": testenv.CloudsFile(),
		"HOME":                  dir,
		"XDG_STATE_HOME":        filepath.Join(dir, "xdg-state"),
		"XDG_CACHE_HOME":        filepath.Join(dir, "xdg-cache"),
		"TMPDIR":                dir,
		"PATH":                  os.Getenv("PATH"),
	}
	var environ []string
	for k, v := range vars {
		environ = append(environ, k+"="+v)
	}
	// As cmd wires it: one AuthCache for the process.
	ob := OpenStackWithoutGuest(&OpenStack{Getenv: func(k string) string { return vars[k] }, Version: "bench", Auth: &openstack.AuthCache{}})
	builds := &build.Builds{OpenStack: ob, Resolver: fixedRelease{}}
	logs := &testenv.LockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))

	run := func(cells int) time.Duration {
		b.Helper()
		var bs []string
		for _, base := range bases[:cells] {
			bs = append(bs, string(base))
		}
		cfgPath := filepath.Join(dir, fmt.Sprintf("config-%d.yaml", cells))
		cfgData := fmt.Sprintf(`cloud: %s
upload_clouds: [%s, %s]
prefix: %s
matrix: {bases: [%s], arches: [x64]}
flavor: %s
network: %s
keep_revisions: 1
runner: {version: 2.330.0}
user_data_file: %s
verify_script_file: %s
skip_default_checks: true
parallelism: 0
state_dir: %s
cache_dir: %s
schedule: {base_image_refresh: 0s}
`, testenv.BuildCloud, testenv.BuildCloud, testenv.UploadCloud, prefix, strings.Join(bs, ", "), testenv.FlavorMin,
			testenv.Network, userData, verify, filepath.Join(dir, "state"), filepath.Join(dir, "cache"))
		if err := os.WriteFile(cfgPath, []byte(cfgData), 0o600); err != nil {
			b.Fatal(err)
		}
		cfg, err := service.LoadConfig(cfgPath)
		if err != nil {
			b.Fatal(err)
		}
		paths := []string{testenv.CloudsFile()}
		s := &service.Service{Config: cfg, Builder: builds, Catalog: service.NewCloudCatalog(paths, cfg.Build.HostProxy, log), Log: log,
			Environ: environ, CloudsPaths: paths}
		start := time.Now()
		rep, err := s.Build(ctx, service.BuildOptions{})
		took := time.Since(start)
		if err != nil {
			b.Fatalf("build of %d cells: %v\n%s", cells, err, tailLines(logs.String(), 40))
		}
		if got := len(rep.Built()); got != cells {
			b.Fatalf("built %d of %d cells", got, cells)
		}
		return took
	}

	run(1) // warm-up: the keypair and security group are made once
	var one, four time.Duration
	for b.Loop() {
		one += run(1)
		four += run(4)
	}
	n := float64(b.N)
	b.ReportMetric(one.Seconds()/n, "one-cell-s")
	b.ReportMetric(four.Seconds()/n, "four-cells-s")
	b.ReportMetric(four.Seconds()/one.Seconds(), "four/one")
	b.ReportMetric(float64(lastParallelism(logs.String())), "parallelism")
	b.ReportMetric(0, "ns/op")
	if path := os.Getenv("GRIB_BENCH_LOG"); path != "" {
		_ = os.WriteFile(path, []byte(logs.String()), 0o600)
	}
}

// fixedRelease resolves every version to one release without GitHub: the
// guest-less builds never download the runner.
type fixedRelease struct{}

func (fixedRelease) Resolve(_ context.Context, version string, arch config.Arch, _ string) (release.Release, error) {
	return release.Release{Repo: config.DefaultRunnerRepo, Version: version, Arch: arch,
		URL: "http://127.0.0.1:9/actions-runner.tar.gz", SHA256: strings.Repeat("0", 64)}, nil
}

// lastParallelism is the parallelism of the last "building cells in
// parallel" log line (0 without one).
func lastParallelism(logs string) int {
	p := 0
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, "building cells in parallel") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "parallelism="); ok {
				_, _ = fmt.Sscanf(v, "%d", &p)
			}
		}
	}
	return p
}
