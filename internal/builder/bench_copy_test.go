package builder

// Benchmarks against the test OpenStack (.ci/openstack-up.sh); run them with
// bench/run.sh, which prints one table. Nothing here runs in .ci/run: every
// benchmark skips unless GRIB_BENCH=1 (and GRIB_IT=1 for testenv).

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// benchChildEnv carries a child's job (JSON) when the test binary runs as
// a benchmark's subprocess.
const benchChildEnv = "GRIB_BENCH_CHILD"

// requireBench skips unless GRIB_BENCH=1 and the test OpenStack is there.
func requireBench(tb testing.TB) {
	tb.Helper()
	if os.Getenv("GRIB_BENCH") != "1" {
		tb.Skip("benchmark against the test OpenStack: run bench/run.sh (GRIB_BENCH=1 GRIB_IT=1)")
	}
	testenv.Require(tb)
}

// copyTargets are the clouds a copy goes to, in the order 1, 2, 3 clouds
// take them: the two upload projects, then the admin project as a third.
var copyTargets = []string{testenv.UploadCloud, testenv.OtherCloud, testenv.AdminCloud}

// benchSizes are the image sizes to copy: $GRIB_BENCH_SIZES (e.g.
// "256MiB,1GiB,4GiB"), default 256 MiB and 1 GiB.
func benchSizes(tb testing.TB) []int64 {
	s := os.Getenv("GRIB_BENCH_SIZES")
	if s == "" {
		s = "256MiB,1GiB"
	}
	var out []int64
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		mult := int64(1)
		switch {
		case strings.HasSuffix(f, "GiB"):
			mult, f = 1<<30, strings.TrimSuffix(f, "GiB")
		case strings.HasSuffix(f, "MiB"):
			mult, f = 1<<20, strings.TrimSuffix(f, "MiB")
		}
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil || n <= 0 {
			tb.Fatalf("GRIB_BENCH_SIZES: bad size %q", f)
		}
		out = append(out, n*mult)
	}
	return out
}

func sizeName(n int64) string {
	if n >= 1<<30 && n%(1<<30) == 0 {
		return fmt.Sprintf("%dGiB", n>>30)
	}
	return fmt.Sprintf("%dMiB", n>>20)
}

// copyJob is what a copy child does.
type copyJob struct {
	Mode     string   // "ours" (the builder's copy step) or "baseline" (the Python tool's way)
	SourceID string   // the image in the build cloud
	Name     string   // the copies' name
	Targets  []string // clouds to copy to
}

// copyChildResult is what a copy child reports on stdout.
type copyChildResult struct {
	WallNS     int64 // the whole copy
	DownloadNS int64 // of which the download to the local file
	Bytes      int64
}

const childResultMarker = "GRIB_BENCH_RESULT "

// BenchmarkCopy copies a raw image of random data from the build cloud to
// 1, 2 and 3 clouds, with the builder's copy step (ours) and with what the
// Python tool does (baseline: download to a file, then upload to each cloud
// in turn). Each copy runs in a child process so that its peak RSS is its
// own. Metrics: wall-s (the copy, from the start of the download to the last
// copy active and checked) and peak-rss-MiB (the child's VmHWM).
func BenchmarkCopy(b *testing.B) {
	requireBench(b)
	prefix := testenv.Prefix(b)
	ctx := context.Background()
	for _, size := range benchSizes(b) {
		src := uploadRandomImage(b, ctx, prefix+"-bench-src-"+sizeName(size), size)
		for n := 1; n <= len(copyTargets); n++ {
			for _, mode := range []string{"ours", "baseline"} {
				b.Run(fmt.Sprintf("size=%s/clouds=%d/%s", sizeName(size), n, mode), func(b *testing.B) {
					var wall, download time.Duration
					var rss int64
					for b.Loop() {
						res, maxRSS := runCopyChild(b, copyJob{Mode: mode, SourceID: src,
							Name: prefix + "-bench-copy", Targets: copyTargets[:n]})
						if res.Bytes != size {
							b.Fatalf("copied %d bytes, want %d", res.Bytes, size)
						}
						wall += time.Duration(res.WallNS)
						download += time.Duration(res.DownloadNS)
						rss = max(rss, maxRSS)
					}
					b.ReportMetric(wall.Seconds()/float64(b.N), "wall-s")
					b.ReportMetric(download.Seconds()/float64(b.N), "download-s")
					b.ReportMetric(float64(rss)/(1<<20), "peak-rss-MiB")
					b.ReportMetric(0, "ns/op")
				})
			}
		}
	}
}

// uploadRandomImage creates a raw image of size random bytes (streamed, not
// stored) in the build cloud, and deletes it when the benchmark ends.
func uploadRandomImage(b *testing.B, ctx context.Context, name string, size int64) string {
	b.Helper()
	c := testenv.MustConnect(b, ctx, testenv.BuildCloud)
	im, err := images.Create(ctx, c.Image, images.CreateOpts{Name: name, DiskFormat: "raw", ContainerFormat: "bare"}).Extract()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := images.Delete(cctx, c.Image, im.ID).ExtractErr(); err != nil {
			b.Errorf("delete source image %s: %v", im.ID, err)
		}
	})
	var seed [32]byte
	copy(seed[:], name)
	data := io.LimitReader(rand.NewChaCha8(seed), size)
	if err := imagedata.Upload(ctx, c.Image, im.ID, data).ExtractErr(); err != nil {
		b.Fatal(err)
	}
	if _, err := testenv.WaitImage(ctx, c.Image, im.ID); err != nil {
		b.Fatal(err)
	}
	return im.ID
}

// runCopyChild runs job in a child process (this test binary) and returns
// its result and peak RSS in bytes.
func runCopyChild(tb testing.TB, job copyJob) (copyChildResult, int64) {
	tb.Helper()
	j, err := json.Marshal(job)
	if err != nil {
		tb.Fatal(err)
	}
	return runChild(tb, "^TestBenchChildCopy$", string(j))
}

// runChild runs the test binary with only the test named by run, and job
// in benchChildEnv; it returns the result the child printed and its peak RSS.
func runChild(tb testing.TB, run, job string) (copyChildResult, int64) {
	tb.Helper()
	tmp := tb.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run="+run, "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), benchChildEnv+"="+job, "TMPDIR="+tmp,
		"OS_CLIENT_CONFIG_FILE="+testenv.CloudsFile())
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("child %s: %v\n%s", run, err, tail(string(out), 30))
	}
	var res copyChildResult
	found := false
	for _, line := range strings.Split(string(out), "\n") {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), childResultMarker); ok {
			if err := json.Unmarshal([]byte(s), &res); err != nil {
				tb.Fatalf("child result %q: %v", s, err)
			}
			found = true
		}
	}
	if !found {
		tb.Fatalf("child %s printed no result:\n%s", run, tail(string(out), 30))
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		tb.Fatal("no rusage for the child")
	}
	return res, ru.Maxrss << 10 // Linux reports KiB
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestBenchChildCopy is BenchmarkCopy's child: it runs only as a
// subprocess, with its job in GRIB_BENCH_CHILD.
func TestBenchChildCopy(t *testing.T) {
	raw := os.Getenv(benchChildEnv)
	if raw == "" {
		t.Skip("a benchmark's child process")
	}
	var job copyJob
	if err := json.Unmarshal([]byte(raw), &job); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	marks := &markHandler{at: map[string]time.Time{}}
	log := slog.New(marks)
	paths, err := openstack.CloudsPaths(os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	connect := ConnectClouds(paths, config.HostProxy{}, nil)
	src, err := connect(ctx, testenv.BuildCloud, log)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := src.GetImage(ctx, job.SourceID)
	if err != nil {
		t.Fatal(err)
	}

	var made []publishedCopy
	var res copyChildResult
	start := time.Now()
	switch job.Mode {
	case "ours":
		bld := &osBuild{
			o:   &OpenStack{Connect: connect, Getenv: os.Getenv},
			log: log,
			spec: config.RunSpec{ImageName: job.Name, Cloud: testenv.BuildCloud,
				UploadClouds: job.Targets, Arch: config.ArchX64, Base: config.Base("noble")},
			info:     buildInfo{ID: newBuildID(), Arch: config.ArchX64, Base: config.Base("noble"), Time: time.Now()},
			cloud:    src,
			snapshot: snap,
		}
		attachPublication(bld)
		err = bld.copy(ctx)
		res.WallNS = int64(time.Since(start))
		res.DownloadNS = int64(marks.time("snapshot downloaded").Sub(start))
		if bld.pub.copies != nil {
			made = bld.pub.copies.created
			if cerr := os.Remove(bld.pub.copies.tmp); cerr != nil {
				t.Error(cerr)
			}
		}
	case "baseline":
		made, err = baselineCopy(ctx, connect, log, src, snap, job)
		res.WallNS = int64(time.Since(start))
		res.DownloadNS = int64(marks.time("snapshot downloaded").Sub(start))
	default:
		t.Fatalf("unknown mode %q", job.Mode)
	}
	// Delete the copies whatever happened (not timed).
	cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer ccancel()
	for _, c := range made {
		if derr := c.cloud.DeleteImage(cctx, c.image.ID); derr != nil {
			t.Errorf("delete copy %s in %s: %v", c.image.ID, c.cloud.Name(), derr)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	res.Bytes = snap.SizeBytes
	out, _ := json.Marshal(res)
	fmt.Println(childResultMarker + string(out))
}

// baselineCopy does what the Python tool does: download the snapshot to a
// file, then for each cloud in turn create the image, upload the file and
// wait until it is active. No checks of the copies.
func baselineCopy(ctx context.Context, connect Connector, log *slog.Logger, src Cloud, snap *openstack.Image, job copyJob) ([]publishedCopy, error) {
	f, err := os.CreateTemp("", "baseline-*.img")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	body, err := src.DownloadImage(ctx, snap.ID)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(f, body)
	body.Close()
	if err != nil {
		return nil, err
	}
	log.Info("snapshot downloaded")
	var made []publishedCopy
	for _, name := range job.Targets {
		c, err := connect(ctx, name, log)
		if err != nil {
			return made, err
		}
		im, err := c.CreateImage(ctx, openstack.ImageSpec{Name: job.Name, DiskFormat: snap.DiskFormat, ContainerFormat: snap.ContainerFormat})
		if err != nil {
			return made, err
		}
		made = append(made, publishedCopy{cloud: c, image: *im})
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return made, err
		}
		if err := c.UploadImage(ctx, im.ID, f); err != nil {
			return made, err
		}
		if _, err := c.WaitImageActive(ctx, im.ID); err != nil {
			return made, err
		}
	}
	return made, nil
}

// markHandler is a slog handler that records when each message was first
// logged, to time the phases of code that only logs them.
type markHandler struct {
	mu sync.Mutex
	at map[string]time.Time
}

func (h *markHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *markHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.at[r.Message]; !ok {
		h.at[r.Message] = time.Now()
	}
	return nil
}

func (h *markHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *markHandler) WithGroup(string) slog.Handler      { return h }

func (h *markHandler) time(msg string) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.at[msg]
}
