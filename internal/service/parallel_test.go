package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
)

func TestParallelismRule(t *testing.T) {
	noQuota := errors.New("nova: 503")
	noMem := errors.New("no /proc/meminfo")
	os, local := config.BuilderOpenStack, config.BuilderLocal
	tests := []struct {
		name string
		in   parallelInput
		want int
	}{
		// Explicit parallelism: N wins over everything but the cell count.
		{"explicit", parallelInput{Explicit: 3, Cells: 4, Builder: os, Servers: room(1)}, 3},
		{"explicit above cells", parallelInput{Explicit: 6, Cells: 4, Builder: local, CPUs: 2}, 4},
		{"explicit local", parallelInput{Explicit: 2, Cells: 4, Builder: local, CPUs: 1, MemMiB: 100, VMMemMiB: 2048}, 2},
		// openstack: every cell at once, whatever the CPUs, up to the cap and the quota.
		{"openstack four cells", parallelInput{Cells: 4, Builder: os, CPUs: 2}, 4},
		{"openstack one cell", parallelInput{Cells: 1, Builder: os}, 1},
		{"openstack cap", parallelInput{Cells: 20, Builder: os}, MaxAutoParallelism},
		{"openstack servers for 3", parallelInput{Cells: 4, Builder: os, Servers: room(3), Images: room(50)}, 3},
		{"openstack images for 2", parallelInput{Cells: 4, Builder: os, Servers: room(50), Images: room(2)}, 2},
		{"openstack both, the lower", parallelInput{Cells: 8, Builder: os, Servers: room(5), Images: room(3)}, 3},
		{"openstack quota roomier than cells", parallelInput{Cells: 4, Builder: os, Servers: room(50), Images: room(50)}, 4},
		{"openstack servers full: one at a time", parallelInput{Cells: 4, Builder: os, Servers: room(0)}, 1},
		{"openstack no quota: cap", parallelInput{Cells: 12, Builder: os, Servers: quotaRead{}, Images: quotaRead{}}, MaxAutoParallelism},
		{"openstack quotas unreadable: cap", parallelInput{Cells: 12, Builder: os,
			Servers: quotaRead{N: 1, Limited: true, Err: noQuota}, Images: quotaRead{N: 1, Limited: true, Err: noQuota}}, MaxAutoParallelism},
		{"openstack image quota unreadable: servers", parallelInput{Cells: 12, Builder: os,
			Servers: room(5), Images: quotaRead{Err: noQuota}}, 5},
		// local: CPUs-1 (at least 1) and available memory / the VM's memory.
		{"local 2 CPUs", parallelInput{Cells: 4, Builder: local, CPUs: 2, MemMiB: 64 << 10, VMMemMiB: 2048}, 1},
		{"local 1 CPU", parallelInput{Cells: 4, Builder: local, CPUs: 1, MemMiB: 64 << 10, VMMemMiB: 2048}, 1},
		{"local 8 CPUs, memory for 3", parallelInput{Cells: 4, Builder: local, CPUs: 8, MemMiB: 7000, VMMemMiB: 2048}, 3},
		{"local 8 CPUs, memory for 20", parallelInput{Cells: 4, Builder: local, CPUs: 8, MemMiB: 40960, VMMemMiB: 2048}, 4},
		{"local 16 CPUs, 10 cells", parallelInput{Cells: 10, Builder: local, CPUs: 16, MemMiB: 1 << 20, VMMemMiB: 2048}, 10},
		{"local memory for less than one VM", parallelInput{Cells: 4, Builder: local, CPUs: 8, MemMiB: 1000, VMMemMiB: 2048}, 1},
		{"local memory unreadable: CPUs", parallelInput{Cells: 4, Builder: local, CPUs: 4, MemErr: noMem, VMMemMiB: 2048}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := parallelism(tt.in)
			if got != tt.want {
				t.Errorf("parallelism %d (%s), want %d", got, why, tt.want)
			}
			if why == "" {
				t.Error("no reason given")
			}
		})
	}
}

func TestMemAvailableMiB(t *testing.T) {
	tests := []struct {
		in      string
		want    int
		wantErr bool
	}{
		{"MemTotal:       24576000 kB\nMemFree:  1000 kB\nMemAvailable:   8388608 kB\n", 8192, false},
		{"MemTotal:       24576000 kB\n", 0, true},
		{"MemAvailable: lots kB\n", 0, true},
	}
	for _, tt := range tests {
		got, err := memAvailableMiB(strings.NewReader(tt.in))
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("memAvailableMiB(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func room(n int) quotaRead { return quotaRead{N: n, Limited: true} }

type fakeQuota struct {
	servers, images quotaRead
	clouds          []string
}

func (q *fakeQuota) InstanceHeadroom(_ context.Context, cloud string) (int, bool, error) {
	q.clouds = append(q.clouds, cloud)
	return q.servers.N, q.servers.Limited, q.servers.Err
}

func (q *fakeQuota) ImageHeadroom(_ context.Context, cloud string) (int, bool, error) {
	q.clouds = append(q.clouds, cloud)
	return q.images.N, q.images.Limited, q.images.Err
}

type fakeHost struct {
	cpus, mem int
	err       error
}

func (h fakeHost) CPUs() int                     { return h.cpus }
func (h fakeHost) MemAvailableMiB() (int, error) { return h.mem, h.err }

// The service gathers the rule's input: the build cloud's quota for the
// openstack builder (not asked when parallelism is set), the host for the
// local builder.
func TestServiceParallelismInputs(t *testing.T) {
	const four = "matrix: {bases: [focal, jammy, noble, resolute], arches: [x64]}\n"
	tests := []struct {
		name      string
		extra     string
		local     bool
		quota     *fakeQuota
		host      fakeHost
		want      int
		wantAsked bool
		wantLog   []string // in the log, besides the outcome line
	}{
		{name: "servers for 2", extra: four, quota: &fakeQuota{servers: room(2), images: room(9)}, want: 2, wantAsked: true},
		{name: "images for 3", extra: four, quota: &fakeQuota{servers: room(9), images: room(3)}, want: 3, wantAsked: true},
		{name: "quotas unreadable", extra: four, quota: &fakeQuota{servers: quotaRead{Err: errors.New("HTTP 503")},
			images: quotaRead{Err: errors.New("HTTP 404")}}, want: 4, wantAsked: true,
			wantLog: []string{"cannot read the server quota", "HTTP 503", "cannot read the image quota", "HTTP 404"}},
		{name: "explicit skips the quota", extra: four + "parallelism: 3\n", quota: &fakeQuota{servers: room(1)}, want: 3},
		{name: "no quota reader", extra: four, want: 4},
		{name: "local by memory", local: true, host: fakeHost{cpus: 8, mem: 4100}, want: 2},
		{name: "local by CPUs, memory unreadable", local: true, host: fakeHost{cpus: 4, err: errors.New("nope")}, want: 3,
			wantLog: []string{"cannot read the available memory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, _, _ := testService(t, testConfig(t, tt.extra))
			if tt.quota != nil {
				s.Quota = tt.quota
			}
			s.Host = tt.host
			var logs strings.Builder
			s.Log = slog.New(slog.NewTextHandler(&logs, nil))
			if tt.local {
				s.Config.Build.Builder = config.BuilderLocal
			}
			got := s.parallelism(t.Context(), 4)
			if got != tt.want {
				t.Errorf("parallelism %d, want %d", got, tt.want)
			}
			for _, w := range append(tt.wantLog, "building cells in parallel", fmt.Sprintf("parallelism=%d", tt.want)) {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("log lacks %q:\n%s", w, logs.String())
				}
			}
			if tt.quota != nil {
				asked := len(tt.quota.clouds) > 0
				if asked != tt.wantAsked {
					t.Errorf("quota asked %v, want %v", asked, tt.wantAsked)
				}
				for _, c := range tt.quota.clouds {
					if c != s.Config.Build.Cloud {
						t.Errorf("quota of %q, want the build cloud %q", c, s.Config.Build.Cloud)
					}
				}
			}
		})
	}
}

// Four openstack cells with parallelism 0 on any host all build at once.
func TestBuildAutoParallelismOpenStack(t *testing.T) {
	s, b, _, _ := testService(t, testConfig(t, "matrix: {bases: [focal, jammy, noble, resolute], arches: [x64]}\n"))
	s.Host = fakeHost{cpus: 2, mem: 1024} // must not matter for openstack
	b.gate, b.started = make(chan struct{}), make(chan string, 4)
	done := make(chan error, 1)
	go func() {
		_, err := s.Build(t.Context(), BuildOptions{})
		done <- err
	}()
	for i := range 4 { // all four running before any may finish
		select {
		case <-b.started:
		case <-time.After(10 * time.Second):
			close(b.gate)
			t.Fatalf("only %d of 4 builds started at once", i)
		}
	}
	close(b.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if b.maxActive != 4 {
		t.Errorf("max concurrent %d, want 4", b.maxActive)
	}
}
