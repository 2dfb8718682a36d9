package builder

import (
	"context"
	"log/slog"
	"runtime/debug"

	"github.com/runner-image-builder/github-runner-image-builder/internal/cli"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/release"
)

// Backend connects the builders to the command line.
type Backend struct {
	OpenStack *OpenStack
	// LocalInit and LocalRun serve --builder local (the local qemu
	// builder); nil leaves it "not implemented yet".
	LocalInit func(ctx context.Context, log *slog.Logger, spec config.InitSpec) error
	LocalRun  func(ctx context.Context, log *slog.Logger, spec config.RunSpec, runner release.Release, userData []byte) ([]config.PublishedImage, error)
}

// NewBackend returns the command line's backend with the openstack builder
// (recording version on its images).
func NewBackend(version string) Backend {
	return Backend{OpenStack: &OpenStack{Version: version}}
}

// CLI returns the functions cli.App calls.
func (b Backend) CLI() cli.Backend {
	ob := b.OpenStack
	if ob == nil {
		ob = &OpenStack{}
	}
	return cli.Backend{
		Init: func(ctx context.Context, log *slog.Logger, spec config.InitSpec) error {
			if spec.Builder == config.BuilderLocal {
				if b.LocalInit == nil {
					return errs.New(errs.KindInternal, "init --builder local is not implemented yet in this build")
				}
				return b.LocalInit(ctx, log, spec)
			}
			return ob.Init(ctx, log, spec)
		},
		Run: func(ctx context.Context, log *slog.Logger, spec config.RunSpec, runner release.Release, userData []byte) ([]config.PublishedImage, error) {
			if spec.Builder == config.BuilderLocal {
				if b.LocalRun == nil {
					return nil, errs.New(errs.KindInternal, "run --builder local is not implemented yet in this build")
				}
				return b.LocalRun(ctx, log, spec, runner, userData)
			}
			return ob.Run(ctx, log, spec, runner, userData)
		},
		LatestBuildID: ob.LatestBuildID,
		Sweep: func(ctx context.Context, log *slog.Logger, spec config.SweepSpec) ([]cli.SweptResource, error) {
			swept, err := ob.Sweep(ctx, log, spec)
			out := make([]cli.SweptResource, 0, len(swept))
			for _, s := range swept {
				out = append(out, cli.SweptResource{Kind: s.Kind, Name: s.Name, ID: s.ID})
			}
			return out, err
		},
	}
}

// Version is this binary's version as the Go toolchain recorded it: the
// module version, or "devel" plus the VCS revision of a source build.
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		v = "devel"
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += "-" + s.Value[:12]
			}
		}
	}
	return v
}
