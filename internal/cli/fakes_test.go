package cli

import (
	"context"
	"log/slog"

	"github.com/runner-image-builder/github-runner-image-builder/internal/build"
	"github.com/runner-image-builder/github-runner-image-builder/internal/builder"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/release"
)

// runFunc is a builder that hands the prepared job to a test function: the
// tests see what `run` and the service pass down, and choose the result.
type runFunc func(ctx context.Context, log *slog.Logger, spec config.RunSpec, runner release.Release, userData []byte) ([]config.PublishedImage, error)

func (f runFunc) Build(ctx context.Context, log *slog.Logger, job builder.Job) ([]config.PublishedImage, error) {
	return f(ctx, log, job.Spec, job.Runner, job.UserData)
}

// fakeBuilds runs every build, openstack or local, through f.
func fakeBuilds(f runFunc) *build.Builds {
	return &build.Builds{OpenStack: f, Local: f}
}
