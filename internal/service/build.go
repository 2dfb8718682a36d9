package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/build"
	"github.com/runner-image-builder/github-runner-image-builder/internal/clock"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
	"github.com/runner-image-builder/github-runner-image-builder/internal/release"
	"github.com/runner-image-builder/github-runner-image-builder/internal/service/install"
	"github.com/runner-image-builder/github-runner-image-builder/internal/statedir"
)

// Results of a cell build, as counted in State.Builds and the metrics.
const (
	resultSuccess = "success"
	resultFailure = "failure"
	resultLocked  = "locked"
)

// Builder builds one image: the same path as `run` (*build.Builds:
// resolve the runner release, render the recipe, build, publish, prune).
// observe receives the build's step events (the metrics read them).
type Builder interface {
	Run(ctx context.Context, log *slog.Logger, spec config.RunSpec, observe build.Observer) (build.Result, error)
}

// Initializer seeds a cloud (or the local cache) with base images: `init`.
type Initializer interface {
	Init(ctx context.Context, log *slog.Logger, spec config.InitSpec) error
}

// Resolver resolves a runner release (release.Resolver does).
type Resolver interface {
	Resolve(ctx context.Context, version string, arch config.Arch, pinnedSHA string) (release.Release, error)
}

// Service is the builder host of one configuration.
type Service struct {
	Config   *Config
	Builder  Builder
	Catalog  Catalog
	Resolver Resolver    // optional: new-release checks of Due
	Init     Initializer // optional: base image refresh
	Metrics  *Metrics    // optional
	// Quota reads the build cloud's server quota for parallelism: 0
	// (optional; default: the Catalog when it is a Quota).
	Quota Quota
	Host  Host // what parallelism: 0 reads of this machine (nil: the real one)
	Log   *slog.Logger
	// Environ is the process environment (KEY=VALUE): secrets named by
	// {env: NAME} are read from it, callbacks inherit it without secrets.
	Environ []string
	// CloudsPaths is where the builds and look-ups read clouds.yaml (the
	// configuration's clouds_file, or the openstack CLI's search path).
	CloudsPaths []string
	Now         func() time.Time                                 // default time.Now
	Sleep       func(ctx context.Context, d time.Duration) error // default: a timer; tests shorten it
}

func (s *Service) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

func (s *Service) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

func (s *Service) getenv(key string) string { return config.Getenv(s.Environ)(key) }

func (s *Service) sleep(ctx context.Context, d time.Duration) error {
	if s.Sleep != nil {
		return s.Sleep(ctx, d)
	}
	return clock.Sleep(ctx, d)
}

// BuildOptions change one Build.
type BuildOptions struct {
	// Wait waits for a running build of the same image instead of failing
	// with errs.KindLocked.
	Wait bool
	// IfDue builds only the cells Due says are due.
	IfDue bool
	// LatestFile overrides Config.LatestFile.
	LatestFile string
}

// CellResult is the outcome of one cell.
type CellResult struct {
	Cell
	Images        []config.PublishedImage `json:"images"` // in PublishClouds order
	RunnerVersion string                  `json:"runner_version,omitempty"`
	Attempts      int                     `json:"attempts"`
	Took          time.Duration           `json:"took_ns"`
	Due           string                  `json:"due,omitempty"`     // why it was built (IfDue)
	Skipped       bool                    `json:"skipped,omitempty"` // not due: not built
	Err           error                   `json:"-"`
	Error         string                  `json:"error,omitempty"`
	ExitCode      int                     `json:"exit_code,omitempty"`
}

// Report is the outcome of a Build.
type Report struct {
	Cells    []CellResult    `json:"cells"`
	Latest   *LatestDocument `json:"latest,omitempty"`
	Warnings []string        `json:"warnings,omitempty"`
}

// Built returns the cells that built.
func (r *Report) Built() []CellResult {
	return slices.DeleteFunc(slices.Clone(r.Cells), func(c CellResult) bool { return c.Skipped || c.Err != nil })
}

// Build builds the matrix (with opts.IfDue only the cells that are due):
//
//  1. one lock per image name, all taken before anything starts: if another
//     build holds one, Build fails at once with errs.KindLocked "build of
//     NAME in progress (pid P)" (opts.Wait: it waits);
//  2. the base images are refreshed when Config.BaseImageRefresh has passed;
//  3. the cells build at most parallelism at once (parallel.go); a cell failing
//     with a transient cloud error (5xx, reset) is retried with exponential
//     backoff, any other failure is final; the images handed to consumers
//     are passed as RunSpec.Protect, so pruning never deletes them;
//  4. the latest file is written, the success callback gets the new image
//     IDs and, when it succeeds, they become the images handed to consumers;
//     the failure callback gets the failed cells.
//
// The Report lists every cell. The error: nil when all went well;
// errs.KindPartial when some cells failed and others built; the failure
// itself when all failed; errs.KindCallback when only the callback failed.
func (s *Service) Build(ctx context.Context, opts BuildOptions) (*Report, error) {
	ctx, cancel := context.WithTimeout(ctx, s.Config.BuildTimeout)
	defer cancel()
	log := s.log()
	dir, err := s.Config.serviceDir(s.getenv)
	if err != nil {
		return nil, err
	}
	store := stateStore{dir: dir}
	rep := &Report{}
	todo := s.Config.Cells()
	if opts.IfDue {
		reasons, err := s.Due(ctx, todo)
		if err != nil {
			return nil, err
		}
		var due []Cell
		for _, c := range todo {
			if reasons[c.ImageName] == "" {
				rep.Cells = append(rep.Cells, CellResult{Cell: c, Skipped: true})
				continue
			}
			due = append(due, c)
		}
		todo = due
		if len(todo) == 0 {
			log.Info("no image is due")
			return rep, nil
		}
		defer func() {
			for i := range rep.Cells {
				rep.Cells[i].Due = reasons[rep.Cells[i].ImageName]
			}
		}()
	}

	unlock, err := lockCells(ctx, dir, todo, opts.Wait)
	if err != nil {
		if errs.Is(err, errs.KindLocked) {
			s.recordLocked(ctx, store, len(todo))
		}
		return rep, err
	}
	defer unlock()

	st, err := store.Load()
	if err != nil {
		return rep, err
	}
	if w := s.refreshBaseImages(ctx, store, st); w != "" {
		rep.Warnings = append(rep.Warnings, w)
	}
	results := s.buildCells(ctx, todo, st.ProtectedIDs())
	rep.Cells = append(rep.Cells, results...)

	// What follows records the outcome: it runs even when ctx was cancelled.
	bg, bgCancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer bgCancel()
	interrupted := ctx.Err() != nil
	if err := s.recordResults(bg, store, results); err != nil {
		rep.Warnings = append(rep.Warnings, err.Error())
		log.Error("recording the build results", "error", err)
	}
	if w := s.keepManifests(opts, results); w != "" {
		rep.Warnings = append(rep.Warnings, w)
	}
	var latestErr, cbErr error
	if !interrupted {
		latestErr = s.writeLatest(ctx, opts, rep)
		cbErr = s.callbacks(ctx, store, results)
	}
	if st, err := store.Load(); err == nil {
		s.Metrics.SetState(st)
	}
	return rep, buildError(ctx, results, latestErr, cbErr)
}

// lockCells takes the lock of every cell's image name, in name order (two
// waiting builds never deadlock), or none.
func lockCells(ctx context.Context, dir string, cells []Cell, wait bool) (func(), error) {
	names := make([]string, 0, len(cells))
	for _, c := range cells {
		names = append(names, c.ImageName)
	}
	slices.Sort(names)
	var unlocks []func()
	release := func() {
		for i := len(unlocks) - 1; i >= 0; i-- {
			unlocks[i]()
		}
	}
	for _, name := range names {
		path := filepath.Join(dir, "locks", name+".lock")
		var unlock func()
		var err error
		if wait {
			unlock, err = statedir.Lock(ctx, path)
		} else {
			unlock, err = statedir.TryLock(path)
		}
		if err != nil {
			release()
			var le *statedir.LockedError
			if errors.As(err, &le) && !errors.Is(err, context.Canceled) {
				pid := "unknown"
				if le.PID > 0 {
					pid = strconv.Itoa(le.PID)
				}
				hint := "; pass --wait to wait for it"
				if wait {
					hint = ""
				}
				return nil, &errs.Error{Kind: errs.KindLocked, Msg: fmt.Sprintf("build of %s in progress (pid %s)%s", name, pid, hint)}
			}
			return nil, err
		}
		unlocks = append(unlocks, unlock)
	}
	return release, nil
}

func (s *Service) recordLocked(ctx context.Context, store stateStore, n int) {
	err := store.Update(ctx, func(st *State) { st.Builds[resultLocked] += n })
	if err != nil {
		s.log().Warn("recording a locked build", "error", err)
	}
	if st, err := store.Load(); err == nil {
		s.Metrics.SetState(st)
	}
}

// refreshBaseImages runs init for the base images that are missing from
// the state's seeded list, or for all when Config.BaseImageRefresh has
// passed since the last refresh; with BaseImageRefresh 0 it does nothing.
// A failure is a warning: the builds go on with the base images there are.
func (s *Service) refreshBaseImages(ctx context.Context, store stateStore, st *State) string {
	if s.Init == nil || s.Config.BaseImageRefresh == 0 {
		return "" // never: only setup seeds the base images
	}
	specs, err := s.initSpecsDue(st, false)
	if err != nil {
		return "base image refresh: " + err.Error()
	}
	if len(specs) == 0 {
		return ""
	}
	if err := s.runInit(ctx, store, st, specs); err != nil {
		s.log().Error("base image refresh failed; building from the current base images", "error", err)
		return "base image refresh failed: " + oneLine(err.Error())
	}
	return ""
}

// initSpecsDue returns the inits to run: all of them when force is set or
// the last refresh is older than Config.BaseImageRefresh (0: never by
// age), else those of bases not seeded yet.
func (s *Service) initSpecsDue(st *State, force bool) ([]config.InitSpec, error) {
	cacheDir := s.Config.CacheDir
	if cacheDir == "" {
		var err error
		if cacheDir, err = config.CacheDir(s.getenv); err != nil {
			return nil, err
		}
	}
	every := s.Config.BaseImageRefresh
	all := force || (every > 0 && s.now().Sub(st.LastBaseRefresh) >= every)
	var out []config.InitSpec
	for _, spec := range s.Config.InitSpecs(cacheDir) {
		spec.CloudsPaths = s.CloudsPaths
		if !all {
			spec.Bases = slices.DeleteFunc(spec.Bases, func(b config.Base) bool {
				return slices.Contains(st.Seeded, seedKey(spec.Cloud, spec.Arch, b))
			})
		}
		if len(spec.Bases) > 0 {
			out = append(out, spec)
		}
	}
	return out, nil
}

func seedKey(cloud string, a config.Arch, b config.Base) string {
	return cloud + "/" + string(a) + "/" + string(b)
}

// runInit runs the inits and records what they seeded.
func (s *Service) runInit(ctx context.Context, store stateStore, st *State, specs []config.InitSpec) error {
	start := time.Now()
	var seeded []string
	for _, spec := range specs {
		s.log().Info("seeding base images", "cloud", spec.Cloud, "arch", string(spec.Arch), "bases", spec.Bases)
		if err := s.Init.Init(ctx, s.log(), spec); err != nil {
			return fmt.Errorf("init for %s: %w", spec.Arch, err)
		}
		for _, b := range spec.Bases {
			seeded = append(seeded, seedKey(spec.Cloud, spec.Arch, b))
		}
	}
	s.Metrics.ObservePhase("base_image_refresh", time.Since(start))
	now := s.now()
	all := len(specs) > 0
	update := func(st *State) {
		for _, k := range seeded {
			if !slices.Contains(st.Seeded, k) {
				st.Seeded = append(st.Seeded, k)
			}
		}
		slices.Sort(st.Seeded)
		if all {
			st.LastBaseRefresh = now
		}
	}
	if err := store.Update(ctx, update); err != nil {
		return fmt.Errorf("recording the seeded base images: %w", err)
	}
	update(st)
	return nil
}

// buildCells builds every cell, at most parallelism at once.
func (s *Service) buildCells(ctx context.Context, cells []Cell, protect []string) []CellResult {
	results := make([]CellResult, len(cells))
	sem := make(chan struct{}, s.parallelism(ctx, len(cells)))
	var wg sync.WaitGroup
	for i, cell := range cells {
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				results[i] = failed(CellResult{Cell: cell}, errs.Wrap(errs.KindInterrupted, ctx.Err(), "%s not started", cell.ImageName))
				return
			}
			defer func() { <-sem }()
			results[i] = s.buildCell(ctx, cell, protect)
		})
	}
	wg.Wait()
	return results
}

func failed(r CellResult, err error) CellResult {
	r.Err, r.Error, r.ExitCode = err, oneLine(err.Error()), errs.ExitCode(err)
	return r
}

// buildCell builds one cell, retrying transient cloud errors.
func (s *Service) buildCell(ctx context.Context, cell Cell, protect []string) CellResult {
	start := time.Now()
	res := CellResult{Cell: cell}
	log := s.log().With("image", cell.ImageName, "base", string(cell.Base), "arch", string(cell.Arch))
	spec, err := s.Config.RunSpec(cell, s.getenv, protect)
	if err != nil {
		return failed(res, fmt.Errorf("%s: %w", cell.ImageName, err))
	}
	spec.CloudsPaths = s.CloudsPaths
	for attempt := 1; ; attempt++ {
		res.Attempts = attempt
		log.Info("build starting", "attempt", attempt)
		br, err := s.Builder.Run(ctx, log, spec, s.Metrics.ObserveStep)
		if errs.KindOf(err) == errs.KindPartial && len(br.Images) > 0 {
			// Published, but old revisions were not all pruned: the cell's
			// images are good and recorded; the next build prunes.
			log.Warn("build published its images but pruning failed", "error", err)
			err = nil
		}
		if err == nil {
			res.Images, err = orderImages(s.Config.PublishCloudsOf(cell), br.Images)
			res.RunnerVersion = br.Runner.Version
		}
		if err == nil {
			break
		}
		if !openstack.IsTransient(err) || attempt >= s.Config.RetryAttempts || ctx.Err() != nil {
			res = failed(res, err)
			break
		}
		delay := min(s.Config.RetryMin<<(attempt-1), s.Config.RetryMax)
		log.Warn("transient cloud error: retrying the build", "attempt", attempt, "attempts", s.Config.RetryAttempts,
			"wait", delay, "error", err)
		if serr := s.sleep(ctx, delay); serr != nil {
			res = failed(res, errs.Wrap(errs.KindInterrupted, serr, "%s: waiting to retry after: %v", cell.ImageName, err))
			break
		}
	}
	res.Took = time.Since(start)
	s.Metrics.ObservePhase("build", res.Took)
	if res.Err != nil {
		log.Error("build failed", "attempts", res.Attempts, "took", res.Took.Round(time.Second), "error", res.Err)
	} else {
		log.Info("build succeeded", "attempts", res.Attempts, "took", res.Took.Round(time.Second), "images", res.Images)
	}
	return res
}

// orderImages returns imgs in clouds order, one per cloud, or an internal error.
func orderImages(clouds []string, imgs []config.PublishedImage) ([]config.PublishedImage, error) {
	if len(imgs) != len(clouds) {
		return nil, errs.New(errs.KindInternal, "the build reported %d images for %d clouds (%s)", len(imgs), len(clouds), strings.Join(clouds, ","))
	}
	out := make([]config.PublishedImage, 0, len(clouds))
	for _, c := range clouds {
		i := slices.IndexFunc(imgs, func(im config.PublishedImage) bool { return im.Cloud == c })
		if i < 0 || imgs[i].ID == "" {
			return nil, errs.New(errs.KindInternal, "the build reported no image for cloud %q", c)
		}
		out = append(out, imgs[i])
	}
	return out, nil
}

func (s *Service) recordResults(ctx context.Context, store stateStore, results []CellResult) error {
	now := s.now()
	return store.Update(ctx, func(st *State) {
		allOK := len(results) > 0
		for _, r := range results {
			cs := st.Cells[r.ImageName]
			cs.Finished = now
			if r.Err != nil {
				allOK = false
				cs.Result = resultFailure
				st.Builds[resultFailure]++
			} else {
				cs.Result, cs.LastSuccess, cs.RunnerVersion = resultSuccess, now, r.RunnerVersion
				cs.Images = map[string]string{}
				for _, im := range r.Images {
					cs.Images[im.Cloud] = im.ID
				}
				st.Builds[resultSuccess]++
			}
			st.Cells[r.ImageName] = cs
		}
		if allOK {
			st.LastSuccess = now
		}
	})
}

// keepManifests keeps the manifest of every image built, one file per
// image revision (<image ID>.json, the build's bytes) in the manifests
// directory beside the latest file, for `manifest diff --manifests-dir`.
// Without a latest file, or for a build that collected none, it does
// nothing; a failure is a warning (the images are good).
func (s *Service) keepManifests(opts BuildOptions, results []CellResult) string {
	path := cmpOr(opts.LatestFile, s.Config.LatestFile)
	if path == "" {
		return ""
	}
	dir := LatestManifestsDir(path)
	var failed []error
	kept := 0
	for _, r := range results {
		if r.Err != nil {
			continue
		}
		for _, im := range r.Images {
			if im.Manifest == nil {
				continue
			}
			file := config.ManifestFile(dir, im.ID)
			if file == "" {
				failed = append(failed, fmt.Errorf("image ID %q cannot name a file", im.ID))
				continue
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				failed = append(failed, err)
				break
			}
			if err := install.WriteAtomic(file, im.Manifest, 0o644); err != nil {
				failed = append(failed, err)
				continue
			}
			kept++
		}
	}
	if kept > 0 {
		s.log().Info("manifests kept", "dir", dir, "images", kept)
	}
	if len(failed) > 0 {
		err := errors.Join(failed...)
		s.log().Error("keeping the images' manifests beside the latest file", "error", err)
		return "keeping the images' manifests in " + dir + ": " + err.Error()
	}
	return ""
}

// LatestManifestsDir is where the builder host keeps its images'
// manifests: the directory "manifests" beside the latest file.
func LatestManifestsDir(latestFile string) string {
	return config.ManifestsDir(filepath.Dir(latestFile))
}

// writeLatest writes the latest file (if any) from a fresh look-up, so it
// holds the newest image of every cell, failed cells included.
func (s *Service) writeLatest(ctx context.Context, opts BuildOptions, rep *Report) error {
	path := cmpOr(opts.LatestFile, s.Config.LatestFile)
	if path == "" && s.Metrics == nil {
		return nil
	}
	images, err := s.Latest(ctx)
	if err != nil {
		s.log().Error("looking up the latest images", "error", err)
		if path == "" {
			return nil // only the metrics wanted them
		}
		return fmt.Errorf("--latest-file: %w", err)
	}
	s.Metrics.SetImages(images)
	doc := NewLatestDocument(images)
	rep.Latest = &doc
	if path == "" {
		return nil
	}
	if err := WriteLatestFile(path, doc); err != nil {
		return errs.Wrap(errs.KindPublish, err, "--latest-file")
	}
	s.log().Info("latest file written", "path", path, "images", len(images))
	return nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// callbacks hands the new images to the consumers and reports failures.
// The images become "handed" (never pruned) when the success callback
// returned 0, or at once when there is no success callback.
func (s *Service) callbacks(ctx context.Context, store stateStore, results []CellResult) error {
	var images []CallbackImage
	var ids []string
	var failures []CallbackFailure
	var failedNames []string
	for _, r := range results {
		if r.Err != nil {
			failures = append(failures, CallbackFailure{Base: r.Base, Arch: r.Arch, Name: r.ImageName,
				Kind: errs.KindOf(r.Err).String(), ExitCode: r.ExitCode, Error: r.Error})
			failedNames = append(failedNames, r.ImageName)
			continue
		}
		for _, im := range r.Images {
			images = append(images, CallbackImage{Cloud: im.Cloud, Base: r.Base, Arch: r.Arch, Name: r.ImageName, ID: im.ID})
			ids = append(ids, im.ID)
		}
	}
	env := s.Config.callbackEnv(s.getenv)
	var errsOut []error
	if len(images) > 0 {
		start := time.Now()
		err := runCallback(ctx, s.log(), s.Config.OnSuccess, ids, callbackInput{Result: resultSuccess, Images: images}, s.Config.CallbackTimeout, env)
		if len(s.Config.OnSuccess) > 0 {
			s.Metrics.ObservePhase("callback", time.Since(start))
		}
		if err == nil {
			if uerr := store.Update(context.WithoutCancel(ctx), func(st *State) {
				for _, im := range images {
					if st.Handed[im.Cloud] == nil {
						st.Handed[im.Cloud] = map[string]string{}
					}
					st.Handed[im.Cloud][im.Name] = im.ID
				}
			}); uerr != nil {
				err = fmt.Errorf("recording the images handed to consumers: %w", uerr)
			}
		}
		errsOut = append(errsOut, err)
	}
	if len(failures) > 0 {
		err := runCallback(ctx, s.log(), s.Config.OnFailure, failedNames,
			callbackInput{Result: resultFailure, Images: images, Failures: failures}, s.Config.CallbackTimeout, env)
		errsOut = append(errsOut, err)
	}
	return errors.Join(errsOut...)
}

// buildError composes Build's error from the cells and the hand-off.
func buildError(ctx context.Context, results []CellResult, latestErr, cbErr error) error {
	var bad []CellResult
	for _, r := range results {
		if r.Err != nil {
			bad = append(bad, r)
		}
	}
	extra := ""
	for _, e := range []error{latestErr, cbErr} {
		if e != nil {
			extra += "; " + oneLine(e.Error())
		}
	}
	switch {
	case ctx.Err() != nil && len(bad) > 0:
		return errs.Wrap(errs.KindInterrupted, ctx.Err(), "build interrupted (%s)", describe(bad))
	case len(bad) > 0 && len(bad) < len(results):
		return errs.New(errs.KindPartial, "%d of %d image builds failed: %s%s", len(bad), len(results), describe(bad), extra)
	case len(bad) == 1:
		if extra == "" {
			return bad[0].Err
		}
		return &errs.Error{Kind: errs.KindOf(bad[0].Err), Msg: bad[0].ImageName + ": " + bad[0].Error + extra}
	case len(bad) > 1:
		return &errs.Error{Kind: errs.KindOf(bad[0].Err), Msg: fmt.Sprintf("all %d image builds failed: %s%s", len(bad), describe(bad), extra)}
	case cbErr != nil:
		return cbErr
	case latestErr != nil:
		return latestErr
	}
	return nil
}

func describe(bad []CellResult) string {
	parts := make([]string, len(bad))
	for i, r := range bad {
		parts[i] = fmt.Sprintf("%s: %s", r.ImageName, r.Error)
	}
	return strings.Join(parts, "; ")
}

// exists reports whether path exists.
func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
