package builder

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// BenchmarkOrchestration runs the openstack builder's steps with a
// guest-less server (a base image without grib_test_guest: the test Nova
// makes it ACTIVE at once and snapshots it as 1 MiB raw), so there is no
// guest boot, cloud-init or script, and the byte transfer is 1 MiB. The
// build publishes to two clouds (the build cloud and one upload cloud), as
// a typical run does. Every request goes through internal/faultproxy in
// pass-through mode, which counts them.
//
// Metrics: overhead-s (the whole run: what the builder adds around a guest
// and the bytes), api-calls (HTTP requests to Keystone, Nova, Glance and
// Neutron), and per step <step>-s.
func BenchmarkOrchestration(b *testing.B) {
	requireBench(b)
	prefix := testenv.Prefix(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	proxy, connect := proxiedConnector(b)

	dir := b.TempDir()
	base := filepath.Join(dir, "base.raw")
	data := make([]byte, 1<<20)
	_, _ = rand.Read(data)
	if err := os.WriteFile(base, data, 0o600); err != nil {
		b.Fatal(err)
	}
	buildCloud := testenv.MustConnect(b, ctx, testenv.BuildCloud)
	baseID, err := testenv.UploadImage(ctx, buildCloud.Image, config.BaseImageName(prefix, config.BaseNoble, config.ArchX64), base, "raw", initProperties(prefix, data))
	if baseID != "" {
		b.Cleanup(func() { deleteBenchImage(b, connect, testenv.BuildCloud, baseID) })
	}
	if err != nil {
		b.Fatal(err)
	}
	verify := filepath.Join(dir, "verify.sh")
	if err := os.WriteFile(verify, []byte("#!/bin/sh\ntrue\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	env := map[string]string{"HOME": dir, "XDG_STATE_HOME": filepath.Join(dir, "state"), "TMPDIR": dir}
	o := &OpenStack{Connect: connect, Getenv: func(k string) string { return env[k] }, Version: "bench", withoutGuest: true}
	spec := config.RunSpec{
		ImageName: config.ImageName(prefix, config.BaseNoble, config.ArchX64), Cloud: testenv.BuildCloud,
		Arch: config.ArchX64, Base: config.BaseNoble, Prefix: prefix, KeepRevisions: 1,
		UploadClouds: []string{testenv.BuildCloud, testenv.UploadCloud}, Visibility: config.VisibilityPrivate,
		RunnerRepo: config.DefaultRunnerRepo, RunnerAPIURL: config.DefaultRunnerAPIURL, Timeouts: config.DefaultTimeouts(),
		Builder: config.BuilderOpenStack, Flavor: testenv.FlavorMin, Network: testenv.Network,
		UserDataFile: "/dev/null", VerifyScriptFile: verify, SkipDefaultChecks: true,
	}
	if err := spec.Validate(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { removeBuildLeftovers(b, connect, prefix, spec.ImageName, spec.UploadClouds) })

	var total time.Duration
	var calls int
	stepTimes := map[string]time.Duration{}
	for b.Loop() {
		proxy.ClearRequests()
		bld := &osBuild{o: o, spec: spec, job: Job{Spec: spec, UserData: []byte("#cloud-config\n")}}
		bld.info = buildInfo{ID: newBuildID(), Prefix: prefix, Arch: spec.Arch, Base: spec.Base, Time: time.Now(), BuilderVersion: "bench"}
		bld.log = slog.New(slog.DiscardHandler)
		attachPublication(bld)
		steps := bld.steps()
		r := &Runner{Log: bld.log, Observe: func(ev Event) {
			if ev.Kind == StepEnded {
				stepTimes[ev.Step] += ev.Took
			}
		}}
		start := time.Now()
		if err := r.Run(ctx, steps); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		if err := proxy.Idle(ctx); err != nil {
			b.Fatal(err)
		}
		calls += len(proxy.Requests())
		if len(bld.pub.published) != len(spec.UploadClouds) {
			b.Fatalf("published %v, want one image per upload cloud", bld.pub.published)
		}
	}
	n := float64(b.N)
	b.ReportMetric(total.Seconds()/n, "overhead-s")
	b.ReportMetric(float64(calls)/n, "api-calls")
	b.ReportMetric(0, "ns/op")
	names := make([]string, 0, len(stepTimes))
	for k := range stepTimes {
		names = append(names, k)
	}
	sort.Strings(names)
	var parts []string
	for _, k := range names {
		parts = append(parts, fmt.Sprintf("%s=%.2fs", k, stepTimes[k].Seconds()/n))
	}
	b.Logf("step times: %s", strings.Join(parts, " "))
}

func deleteBenchImage(tb testing.TB, connect Connector, cloud, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := connect(ctx, cloud, slog.New(slog.DiscardHandler))
	if err == nil {
		err = c.DeleteImage(ctx, id)
	}
	if err != nil {
		tb.Errorf("delete image %s in %s: %v", id, cloud, err)
	}
}

// removeBuildLeftovers deletes what a successful guest-less build keeps:
// the published images, the keypair and the security group of prefix.
func removeBuildLeftovers(tb testing.TB, connect Connector, prefix, imageName string, cloudNames []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, name := range cloudNames {
		c, err := connect(ctx, name, slog.New(slog.DiscardHandler))
		if err != nil {
			tb.Errorf("cleanup: %v", err)
			continue
		}
		ims, err := c.ListImagesByName(ctx, imageName, false)
		if err != nil {
			tb.Errorf("cleanup: %v", err)
		}
		for _, im := range ims {
			if err := c.DeleteImage(ctx, im.ID); err != nil {
				tb.Errorf("cleanup: %v", err)
			}
		}
		if name != testenv.BuildCloud {
			continue
		}
		if err := c.DeleteKeypair(ctx, config.KeypairName(prefix)); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
		sgs, err := c.ListSecurityGroups(ctx, config.SecurityGroupName(prefix))
		if err != nil {
			tb.Errorf("cleanup: %v", err)
		}
		for _, sg := range sgs {
			if err := c.DeleteSecurityGroup(ctx, sg.ID); err != nil {
				tb.Errorf("cleanup: %v", err)
			}
		}
	}
}
