// Package build runs one build from a validated request to its result: it
// resolves the runner release, renders the recipe (or reads --user-data),
// reads the verify script and fetches the user's script once, picks the
// builder, runs it (its steps, then the shared copy, publish and prune) and
// reports the published images. `run` (internal/cli) and the builder
// host's `build` and `serve` (internal/service) call Builds.Run; nothing
// below this package knows about either.
package build

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/builder"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/qemu"
	"github.com/runner-image-builder/github-runner-image-builder/internal/recipe"
	"github.com/runner-image-builder/github-runner-image-builder/internal/release"
)

// MaxUserData caps --user-data and --verify-script: Nova accepts 64 KiB of
// base64 user-data.
const MaxUserData = 48 << 10

// Builder is one way to make and publish an image from a prepared job:
// *builder.OpenStack and *builder.Local.
type Builder interface {
	Build(ctx context.Context, log *slog.Logger, job builder.Job) ([]config.PublishedImage, error)
}

// Resolver resolves a runner release (*release.Resolver does).
type Resolver interface {
	Resolve(ctx context.Context, version string, arch config.Arch, pinnedSHA string) (release.Release, error)
}

// Event and Observer are the builders' step and resource events.
type (
	Event    = builder.Event
	Observer = builder.Observer
)

// The kinds of Event.
const (
	StepStarted = builder.StepStarted
	StepEnded   = builder.StepEnded
	Made        = builder.Made
	Removed     = builder.Removed
)

// Builds runs builds. Its zero value refuses to build (no builder); cmd
// wires the real builders.
type Builds struct {
	OpenStack Builder
	Local     Builder
	// Resolver looks runner releases up; nil means a release.Resolver made
	// from each request's --runner-* settings and GitHub token.
	Resolver Resolver
	// HTTP fetches --script-url; nil means a client with a 2 minute timeout
	// through the request's HostProxy.
	HTTP *http.Client
	// Observe receives every build's events (the process's Ledger); nil
	// ignores them.
	Observe Observer
}

// Result is what a build published, and the runner release it installed.
type Result struct {
	Images []config.PublishedImage // one per Spec.PublishClouds(), in any order
	Runner release.Release
}

// Prepare resolves what a request needs that does not depend on the
// builder's state: the runner release, the user-data the guest boots with
// and the checks (the verify script read once). It fetches nothing but the
// release metadata (and nothing at all when --user-data replaces the recipe,
// or the runner version and SHA-256 are pinned), so a dry run uses it too.
// The script is fetched by Run.
func (b *Builds) Prepare(ctx context.Context, log *slog.Logger, spec config.RunSpec) (builder.Job, error) {
	job := builder.Job{Spec: spec}
	var verify []byte
	if spec.VerifyScriptFile != "" {
		var err error
		if verify, err = ReadSmallFile("--verify-script", spec.VerifyScriptFile, MaxUserData); err != nil {
			return job, err
		}
	}
	// The guest's view of --proxy: a local guest never reaches this host's
	// loopback, so a proxy there is refused.
	guestProxy := spec.Proxy
	if spec.Builder == config.BuilderLocal {
		var err error
		if guestProxy, err = qemu.GuestProxy(spec.Proxy, spec.Isolated); err != nil {
			return job, err
		}
	}
	if spec.UserDataFile != "" {
		data, err := ReadSmallFile("--user-data", spec.UserDataFile, MaxUserData)
		if err != nil {
			return job, err
		}
		if guestProxy != spec.Proxy {
			log.Warn("the guest reaches the proxy at another address than --proxy; --user-data is used as given",
				"proxy", spec.Proxy, "guest_proxy", guestProxy)
		}
		if spec.RunnerVersion != "" {
			job.Runner = release.Release{Repo: spec.RunnerRepo, Version: spec.RunnerVersion, Arch: spec.Arch, SHA256: spec.RunnerSHA256}
		}
		job.UserData = data
	} else {
		rel, err := b.resolver(spec, log).Resolve(ctx, spec.RunnerVersion, spec.Arch, spec.RunnerSHA256)
		if err != nil {
			return job, fmt.Errorf("resolving the runner release: %w", err)
		}
		if guestProxy != spec.Proxy {
			log.Info("the guest reaches the proxy through qemu's host alias", "proxy", spec.Proxy, "guest_proxy", guestProxy)
		}
		data, err := recipe.Render(recipe.Params{Arch: spec.Arch, Base: spec.Base, Runner: rel, Proxy: guestProxy})
		if err != nil {
			return job, fmt.Errorf("rendering the recipe: %w", err)
		}
		job.Runner, job.UserData = rel, data
	}
	checks, err := builder.ChecksFor(spec, job.Runner.Version, verify)
	if err != nil {
		return job, err
	}
	job.Checks = checks
	return job, nil
}

func (b *Builds) resolver(spec config.RunSpec, log *slog.Logger) Resolver {
	if b.Resolver != nil {
		return b.Resolver
	}
	return &release.Resolver{APIURL: spec.RunnerAPIURL, Repo: spec.RunnerRepo, Token: spec.GitHubToken.Reveal(), Log: log,
		HTTP: HostClient(spec.HostProxy, release.DefaultTimeout)}
}

// HostClient is an HTTP client of this host going through proxy (zero:
// the environment's proxy), each request bounded by timeout.
func HostClient(proxy config.HostProxy, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: proxy.Transport()}
}

// Run builds spec and publishes it. spec is validated by its front end
// (config.NewRunSpec for flags, the service's Config.RunSpec for YAML):
// the rules are applied there, once. observe,
// if set, receives this build's events besides Builds.Observe (the
// service's metrics). Once published, images are returned even with an
// error (errs.KindPartial or errs.KindInterrupted): they stay, and
// consumers may use them.
func (b *Builds) Run(ctx context.Context, log *slog.Logger, spec config.RunSpec, observe Observer) (Result, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	bld := b.OpenStack
	if spec.Builder == config.BuilderLocal {
		bld = b.Local
	}
	if bld == nil {
		return Result{}, errs.New(errs.KindInternal, "run --builder %s is not implemented yet in this build", spec.Builder)
	}
	job, err := b.Prepare(ctx, log, spec)
	if err != nil {
		return Result{}, err
	}
	if spec.ScriptURL != "" {
		client := b.HTTP
		if client == nil {
			client = HostClient(spec.HostProxy, 2*time.Minute)
		}
		if job.Script, err = builder.FetchScript(ctx, client, spec.ScriptURL, log); err != nil {
			return Result{Runner: job.Runner}, err
		}
	}
	job.Observe = builder.Observers(b.Observe, observe)
	log.Info("build starting", "image", spec.ImageName, "cloud", spec.Cloud, "arch", string(spec.Arch),
		"base", string(spec.Base), "builder", string(spec.Builder), "runner_version", job.Runner.Version)
	start := time.Now()
	imgs, err := bld.Build(ctx, log, job)
	log.Debug("build ended", "image", spec.ImageName, "took", time.Since(start).Round(time.Millisecond), "images", len(imgs))
	return Result{Images: imgs, Runner: job.Runner}, err
}

// ReadSmallFile reads a file named by a setting (flag), refusing one larger
// than limit.
func ReadSmallFile(flag, path string, limit int64) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, errs.Wrap(errs.KindUsage, err, "%s", flag)
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, limit+1))
	if err != nil {
		return nil, errs.Wrap(errs.KindUsage, err, "%s %q", flag, path)
	}
	if int64(len(data)) > limit {
		return nil, errs.Usage("%s %q: larger than %d KiB", flag, path, limit>>10)
	}
	return data, nil
}
