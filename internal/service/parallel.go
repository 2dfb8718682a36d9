package service

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/qemu"
)

// MaxAutoParallelism caps the openstack builder's automatic parallelism
// (parallelism: 0): an openstack build mostly waits on the cloud, so every
// cell builds at once, up to this many and the project's server and image
// quotas.
const MaxAutoParallelism = 8

// quotaTimeout bounds the quota look-up; past it the cap applies.
const quotaTimeout = 30 * time.Second

// Quota reads how many more servers and images a cloud's project may
// create (openstack.Cloud's InstanceHeadroom and ImageHeadroom); limited is
// false without a quota.
type Quota interface {
	InstanceHeadroom(ctx context.Context, cloud string) (n int, limited bool, err error)
	ImageHeadroom(ctx context.Context, cloud string) (n int, limited bool, err error)
}

// Host is what the local builder's automatic parallelism reads of this
// machine; tests fake it.
type Host interface {
	CPUs() int
	// MemAvailableMiB is the memory available to new processes
	// (/proc/meminfo MemAvailable).
	MemAvailableMiB() (int, error)
}

type realHost struct{}

func (realHost) CPUs() int { return runtime.NumCPU() }

func (realHost) MemAvailableMiB() (int, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return memAvailableMiB(f)
}

// memAvailableMiB reads MemAvailable (in kB) from a /proc/meminfo.
func memAvailableMiB(r io.Reader) (int, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, err := strconv.Atoi(f[1])
			if err != nil {
				return 0, fmt.Errorf("/proc/meminfo: MemAvailable %q: %w", f[1], err)
			}
			return kb / 1024, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("/proc/meminfo: %w", err)
	}
	return 0, fmt.Errorf("/proc/meminfo has no MemAvailable")
}

// parallelInput is what the parallelism rule reads.
type parallelInput struct {
	Explicit int // parallelism: N (0: automatic)
	Cells    int
	Builder  config.BuilderKind

	// openstack: the build cloud's server and image quotas.
	Servers, Images quotaRead

	// local: this host and the VM's memory.
	CPUs     int
	MemMiB   int
	MemErr   error
	VMMemMiB int
}

// parallelism is how many cells build at once, and why:
//   - parallelism: N: min(N, cells);
//   - openstack: min(cells, MaxAutoParallelism, the server and the image
//     quota's headroom), at least 1; a quota that cannot be read is left
//     out (each cell makes one server and one snapshot in the build cloud);
//   - local: min(cells, CPUs-1, available memory / the VM's memory), at
//     least 1; memory that cannot be read leaves CPUs-1.
func parallelism(in parallelInput) (int, string) {
	cells := max(1, in.Cells)
	if in.Explicit > 0 {
		return min(in.Explicit, cells), "parallelism setting"
	}
	if in.Builder == config.BuilderLocal {
		n, why := max(1, in.CPUs-1), fmt.Sprintf("CPUs-1 of %d CPUs", in.CPUs)
		if in.MemErr == nil && in.VMMemMiB > 0 {
			if m := max(1, in.MemMiB/in.VMMemMiB); m < n {
				n, why = m, fmt.Sprintf("%d MiB available / %d MiB per VM", in.MemMiB, in.VMMemMiB)
			}
		}
		if cells < n {
			return cells, "one per cell"
		}
		return n, why
	}
	n, why := MaxAutoParallelism, fmt.Sprintf("cap of %d", MaxAutoParallelism)
	for _, q := range []struct {
		what string
		quotaRead
	}{{"servers", in.Servers}, {"images", in.Images}} {
		if q.Err == nil && q.Limited && q.N < n {
			n, why = max(1, q.N), fmt.Sprintf("quota: %d more %s", q.N, q.what)
		}
	}
	if cells < n {
		return cells, "one per cell"
	}
	return n, why
}

// parallelism gathers the rule's input for n cells, logs the outcome and
// returns it.
func (s *Service) parallelism(ctx context.Context, n int) int {
	in := parallelInput{Explicit: s.Config.Parallelism, Cells: n, Builder: s.Config.Build.Builder}
	log := s.log()
	if in.Explicit == 0 {
		switch in.Builder {
		case config.BuilderLocal:
			host := s.Host
			if host == nil {
				host = realHost{}
			}
			in.CPUs, in.VMMemMiB = host.CPUs(), qemu.DefaultMemoryMiB
			if in.MemMiB, in.MemErr = host.MemAvailableMiB(); in.MemErr != nil {
				log.Warn("cannot read the available memory: parallelism by CPUs only", "error", in.MemErr)
			}
		default:
			if q := s.quota(); q != nil {
				qctx, cancel := context.WithTimeout(ctx, quotaTimeout)
				cloud := s.Config.Build.Cloud
				in.Servers = readQuota(log, "server", cloud, func() (int, bool, error) { return q.InstanceHeadroom(qctx, cloud) })
				in.Images = readQuota(log, "image", cloud, func() (int, bool, error) { return q.ImageHeadroom(qctx, cloud) })
				cancel()
			}
		}
	}
	p, why := parallelism(in)
	log.Info("building cells in parallel", "cells", n, "parallelism", p, "by", why)
	return p
}

// quotaRead is one quota look-up: N more allowed (Limited), or Err.
type quotaRead struct {
	N       int
	Limited bool
	Err     error
}

// readQuota reads one quota; a failure is logged and left out of the rule.
func readQuota(log *slog.Logger, what, cloud string, read func() (int, bool, error)) quotaRead {
	var q quotaRead
	q.N, q.Limited, q.Err = read()
	if q.Err != nil {
		log.Warn("cannot read the "+what+" quota: parallelism not bound by it", "cloud", cloud,
			"cap", MaxAutoParallelism, "error", q.Err)
	}
	return q
}

// quota is Service.Quota, else the Catalog when it reads quotas.
func (s *Service) quota() Quota {
	if s.Quota != nil {
		return s.Quota
	}
	q, _ := s.Catalog.(Quota)
	return q
}
