package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/atomicfile"
	"github.com/runner-image-builder/github-runner-image-builder/internal/clock"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/manifest"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
	"github.com/runner-image-builder/github-runner-image-builder/internal/qemu"
)

// This file is the publishing path both builders share: copy the built
// image to the clouds that do not have it yet, publish every copy
// (properties, marker, visibility), prune old revisions, and turn the
// outcome into the build's result. Once published, an image stays: a
// failure after that (pruning, a cleanup) is reported with the images
// (errs.KindPartial, exit 10), never by deleting them.

// publishedCopy is an image in one cloud, with the connection to it.
type publishedCopy struct {
	cloud Cloud
	image openstack.Image
}

// copyResult is what the copy step made: the verified copies per cloud,
// and every image it created (for the cleanup of a failed build).
type copyResult struct {
	mu      sync.Mutex
	done    map[string]publishedCopy
	created []publishedCopy
	clouds  []Cloud  // every upload cloud connected to
	want    *Digests // the data's, once checked
	tmp     string   // a scratch file to remove, or ""
	// converted are the scratch files of the converted copies, one per
	// disk format, with their digests (guarded by mu).
	converted map[string]*convertedCopy
}

// convertedCopy is the built image converted to another disk format, once
// for every cloud that wants that format.
type convertedCopy struct {
	once sync.Once
	path string
	d    Digests
	err  error
}

// setWant records the checked data's digests for the copies.
func (r *copyResult) setWant(d Digests) {
	r.mu.Lock()
	r.want = &d
	r.mu.Unlock()
}

// keepManifestTimeout bounds writing the kept manifests (local files).
const keepManifestTimeout = time.Minute

// copySource is the data one copy is uploaded from: its disk format, a
// reader of it from its start, and its digests (nil until they are known;
// read under copyResult.mu).
type copySource struct {
	format string
	open   func(context.Context) io.ReadSeeker
	want   func() *Digests
}

// converter makes the data of the built image in another disk format: the
// built image's file (complete and checked) converted into a scratch file.
type converter struct {
	path    string // the built image's file
	format  string // its disk format
	dir     string // where converted files go ("" is $TMPDIR)
	getenv  func(string) string
	qemuImg string // "" is the qemu-img on PATH
}

// publication is one build's publishing state.
type publication struct {
	connect Connector
	log     *slog.Logger
	spec    config.RunSpec
	info    buildInfo
	observe Observer

	// home is the image already in the build cloud (the openstack
	// builder's snapshot); nil when the image is a local file.
	home *publishedCopy
	// format is the disk and container format of the copies.
	format    openstack.Image
	copies    *copyResult
	published []config.PublishedImage
	pruneErr  error // pruning failed after publishing: a partial success

	// manifest is the image's manifest file, as the guest holds it (nil:
	// none was collected); its SHA-256 goes on every image and copy.
	manifest []byte
	// stateDir is the prefix's state directory, where the manifests of
	// published images are kept by image ID.
	stateDir func() (string, error)
	kept     []string // manifest files the "keep manifest" step wrote
}

// imageProperties are the properties of this build's images and copies:
// the build's, and the manifest's SHA-256 once the guest wrote it.
func (p *publication) imageProperties(published bool) map[string]string {
	props := p.info.imageProperties(published)
	if p.manifest != nil {
		props[PropManifestSHA256] = manifest.SHA256(p.manifest)
	}
	return props
}

// manifestSHA256 is the manifest's SHA-256, "" without one.
func (p *publication) manifestSHA256() string {
	if p.manifest == nil {
		return ""
	}
	return manifest.SHA256(p.manifest)
}

// keepManifests keeps a byte-identical copy of the manifest for every image
// of the build (the build cloud's and the copies), by image ID, in the
// prefix's state directory, where `manifest diff` finds it. Its cleanup
// removes them when the build failed.
func (p *publication) keepManifests(context.Context) error {
	if p.manifest == nil || p.stateDir == nil {
		return nil
	}
	state, err := p.stateDir()
	if err != nil {
		return err
	}
	dir := config.ManifestsDir(state)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("keeping the manifest: %w", err)
	}
	imgs := p.images()
	for _, name := range p.order() {
		c, ok := imgs[name]
		if !ok {
			continue
		}
		path := config.ManifestFile(dir, c.image.ID)
		if path == "" {
			return errs.New(errs.KindInternal, "image ID %q of cloud %s cannot name a file", c.image.ID, name)
		}
		if err := atomicfile.Write(path, p.manifest, 0o644); err != nil {
			return fmt.Errorf("keeping the manifest: %w", err)
		}
		p.kept = append(p.kept, path)
		p.observe.Emit(Event{Kind: Made, What: Left{Kind: "file", Name: path}})
	}
	p.log.Info("manifest kept", "dir", dir, "images", len(p.kept))
	return nil
}

// forgetManifests removes the kept manifests of a failed build; a
// published build's stay.
func (p *publication) forgetManifests(_ context.Context, failed bool) error {
	var errsList []error
	for _, path := range p.kept {
		if failed {
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				errsList = append(errsList, err)
				continue
			}
		}
		p.observe.Emit(Event{Kind: Removed, What: Left{Kind: "file", Name: path}}) // removed, or published: meant to stay
	}
	return errors.Join(errsList...)
}

// imageLeft is an image of this build not yet published.
func (p *publication) imageLeft(cloud, id string) Left {
	return Left{Kind: "image", Where: cloud, Name: p.spec.ImageName, ID: id}
}

// targets are the clouds to copy to: the upload clouds that do not hold
// the image yet.
func (p *publication) targets() []string {
	if p.home == nil {
		return slices.Clone(p.spec.UploadClouds)
	}
	return slices.DeleteFunc(slices.Clone(p.spec.UploadClouds), func(c string) bool { return c == p.spec.Cloud })
}

// order is every cloud that gets a published image, the build cloud's
// snapshot first: it is published (and pruned) there even when the upload
// clouds are elsewhere, as the Python tool kept it.
func (p *publication) order() []string {
	if p.home == nil {
		return p.targets()
	}
	return append([]string{p.spec.Cloud}, p.targets()...)
}

// copyFormat is the disk format of the copy to cloud: the one the spec
// gives it, else the built image's.
func (p *publication) copyFormat(cloud string) string {
	if f := p.spec.CopyDiskFormat(cloud); f != "" {
		return string(f)
	}
	return p.format.DiskFormat
}

// uploadsOf counts the target clouds whose copy is the built image's own
// data in format (not converted): the uploads a copy meter counts.
func (p *publication) uploadsOf(format string) int {
	n := 0
	for _, c := range p.targets() {
		if p.copyFormat(c) == format {
			n++
		}
	}
	return n
}

// needsConversion reports whether a target cloud wants a disk format other
// than the built image's.
func (p *publication) needsConversion() bool {
	return slices.ContainsFunc(p.targets(), func(c string) bool { return p.copyFormat(c) != p.format.DiskFormat })
}

// copyAll uploads src's data to every target cloud at once and checks
// each copy. With fill set, fill produces the data while the uploads read
// it, and must record the data's digests with res.setWant before it lets
// src's reads reach the end (an upload that has read to the end checks its
// copy against them at once). Without it, res.want must be set. A target
// that wants another disk format gets conv's conversion of the data, made
// once per format after fill has ended.
func (p *publication) copyAll(ctx context.Context, res *copyResult, src func(context.Context) io.ReadSeeker, fill func(context.Context) error, conv *converter) error {
	targets := p.targets()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel() // wakes any reader still waiting
	fillErr := make(chan error, 1)
	filled := make(chan struct{}) // closed when fill succeeded
	if fill != nil {
		go func() {
			if err := fill(cctx); err != nil {
				cancel() // the uploads cannot succeed: stop them
				fillErr <- err
				return
			}
			close(filled)
			fillErr <- nil
		}()
	} else {
		close(filled)
		fillErr <- nil
	}
	built := &copySource{format: p.format.DiskFormat, open: src, want: func() *Digests {
		res.mu.Lock()
		defer res.mu.Unlock()
		return res.want
	}}
	errc := make(chan error, len(targets))
	for _, name := range targets {
		go func() {
			source := built
			var err error
			if f := p.copyFormat(name); f != built.format {
				source, err = p.converted(cctx, res, conv, f, filled)
			}
			if err == nil {
				err = p.copyTo(cctx, name, res, source)
			}
			if err != nil {
				cancel() // one failure dooms the build: stop the others
			}
			errc <- err
		}()
	}
	var failed, cancelled []error
	for range targets {
		switch err := <-errc; {
		case err == nil:
		case errors.Is(err, context.Canceled) && ctx.Err() == nil:
			cancelled = append(cancelled, err) // stopped because another copy failed
		case slices.Contains(failed, err): // one conversion, several clouds
		default:
			failed = append(failed, err)
		}
	}
	if err := <-fillErr; err != nil && (ctx.Err() != nil || !errors.Is(err, context.Canceled)) {
		return err // the uploads failed because of it
	}
	if len(failed) == 0 && len(cancelled) > 0 {
		failed = cancelled
	}
	if len(failed) > 0 {
		if ctx.Err() != nil {
			return errors.Join(failed...)
		}
		return errs.Wrap(errs.KindPublish, errors.Join(failed...), "copying %s to %v", p.spec.ImageName, targets)
	}
	return nil
}

// converted is the built image in disk format f, converted by conv once
// for all the clouds that want f, after filled is closed (the built
// image's file is complete and checked).
func (p *publication) converted(ctx context.Context, res *copyResult, conv *converter, f string, filled <-chan struct{}) (*copySource, error) {
	if conv == nil {
		return nil, errs.New(errs.KindInternal, "no converter for disk format %s", f)
	}
	select {
	case <-filled:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	res.mu.Lock()
	if res.converted == nil {
		res.converted = map[string]*convertedCopy{}
	}
	cc := res.converted[f]
	if cc == nil {
		cc = &convertedCopy{}
		res.converted[f] = cc
	}
	res.mu.Unlock()
	cc.once.Do(func() { cc.path, cc.d, cc.err = p.convert(ctx, res, conv, f) })
	if cc.err != nil {
		return nil, cc.err
	}
	d := cc.d
	return &copySource{format: f, want: func() *Digests { return &d }, open: func(ctx context.Context) io.ReadSeeker {
		fh, err := os.Open(cc.path)
		if err != nil {
			return errReadSeeker{err}
		}
		// Closed with the copy step's context: every upload of it is over by then.
		context.AfterFunc(ctx, func() { fh.Close() })
		return fh
	}}, nil
}

// convert writes conv's file in disk format f into a new scratch file and
// hashes it: the digests its copies are checked against.
func (p *publication) convert(ctx context.Context, res *copyResult, conv *converter, f string) (string, Digests, error) {
	tmp, err := os.CreateTemp(conv.dir, "grib-copy-*."+f)
	if err != nil {
		return "", Digests{}, errs.Wrap(errs.KindPublish, err, "creating a scratch file for the %s copy (--scratch-dir)", f)
	}
	path := tmp.Name()
	tmp.Close()
	res.mu.Lock()
	res.converted[f].path = path // removed by cleanupCopies, whatever happens next
	res.mu.Unlock()
	p.observe.Emit(Event{Kind: Made, What: Left{Kind: "file", Name: path}})
	if err := os.Remove(path); err != nil { // qemu-img creates it
		return path, Digests{}, err
	}
	if err := qemu.ConvertImage(ctx, conv.getenv, conv.qemuImg, conv.path, conv.format, path, f); err != nil {
		if ctx.Err() != nil {
			return path, Digests{}, fmt.Errorf("converting the image to %s: %w", f, ctx.Err())
		}
		return path, Digests{}, errs.Wrap(errs.KindPublish, err, "converting the image to %s", f)
	}
	fh, err := os.Open(path)
	if err != nil {
		return path, Digests{}, err
	}
	defer fh.Close()
	d, err := fileDigests(ctx, fh)
	if err != nil {
		return path, Digests{}, fmt.Errorf("hashing %s: %w", path, err)
	}
	p.log.Info("image converted", "format", f, "file", path, "bytes", d.Size, "md5", d.MD5)
	return path, d, nil
}

// errReadSeeker fails every read and seek with err.
type errReadSeeker struct{ err error }

func (e errReadSeeker) Read([]byte) (int, error)          { return 0, e.err }
func (e errReadSeeker) Seek(int64, int) (int64, error)    { return 0, e.err }
func (e errReadSeeker) ReadAt([]byte, int64) (int, error) { return 0, e.err }

// copyTo makes one verified copy in cloud name, uploading the data src
// gives (from its start, for each attempt; reads wait at most until the
// context given ends) and checking the copy against src's digests, which
// must be known by the time the data has been read to its end. An upload that fails
// on a transient fault is sent again (at most transferAttempts times) into
// the same image while Glance still has it queued, else into a new one.
func (p *publication) copyTo(ctx context.Context, name string, res *copyResult, src *copySource) error {
	c, err := p.connect(ctx, name, p.log)
	if err != nil {
		return fmt.Errorf("cloud %s: %w", name, err)
	}
	res.mu.Lock()
	res.clouds = append(res.clouds, c)
	res.mu.Unlock()

	var id string
	for attempt := 1; ; attempt++ {
		if id == "" {
			if id, err = p.createCopy(ctx, c, res, src.format); err != nil {
				return fmt.Errorf("cloud %s: %w", name, err)
			}
		}
		err = c.UploadImage(ctx, id, src.open(ctx))
		if err == nil {
			break
		}
		if ctx.Err() != nil || !openstack.IsTransient(err) || attempt == transferAttempts {
			return fmt.Errorf("cloud %s: uploading image %s: %w", name, id, err)
		}
		p.log.Warn("uploading the copy failed; sending it again", "cloud", name, "id", id, "attempt", attempt, "error", err)
		if err := clock.Sleep(ctx, retryPause); err != nil {
			return fmt.Errorf("cloud %s: uploading image %s: %w", name, id, err)
		}
		if im, gerr := c.GetImage(ctx, id); gerr != nil || im.Status != openstack.ImageQueued {
			// Glance keeps an image whose upload broke off as queued; one in
			// any other state takes no second upload: start a new one.
			if derr := c.DeleteImage(ctx, id); derr != nil {
				return fmt.Errorf("cloud %s: uploading image %s: %w (deleting it to start again failed: %v)", name, id, err, derr)
			}
			p.observe.Emit(Event{Kind: Removed, What: p.imageLeft(name, id)})
			id = ""
		}
	}
	want := src.want()
	if want == nil { // an upload that did not read to the end of the data
		return errs.New(errs.KindPublish, "cloud %s: the upload of image %s ended before its data was checked", name, id)
	}
	active, err := c.WaitImageActive(ctx, id)
	if err != nil {
		return fmt.Errorf("cloud %s: %w", name, err)
	}
	if err := want.matches(active); err != nil {
		return errs.New(errs.KindPublish, "cloud %s: the copy %s does not match the built image: %v", name, id, err)
	}
	res.mu.Lock()
	res.done[name] = publishedCopy{cloud: c, image: *active}
	res.mu.Unlock()
	p.log.Info("image copied", "cloud", name, "id", id, "disk_format", active.DiskFormat, "bytes", active.SizeBytes, "md5", active.Checksum)
	return nil
}

// createCopy creates the copy's image record (not yet published) of disk
// format format.
func (p *publication) createCopy(ctx context.Context, c Cloud, res *copyResult, format string) (string, error) {
	var src map[string]string
	if p.home != nil {
		src = p.home.image.Properties // the snapshot's, inherited from its base
	}
	spec := openstack.ImageSpec{
		Name: p.spec.ImageName, DiskFormat: format, ContainerFormat: p.format.ContainerFormat,
		Properties: carriedProperties(src, p.imageProperties(false)),
		Hidden:     true, // until publish, after its check: no consumer lists an unchecked copy
	}
	id, err := createAdopting(ctx, p.log, "image "+p.spec.ImageName+" in cloud "+c.Name(),
		func(ctx context.Context) (string, error) {
			im, err := c.CreateImage(ctx, spec)
			if err != nil {
				return "", err
			}
			return im.ID, nil
		},
		func(ctx context.Context) (string, error) {
			return firstOf(imagesOfBuild(ctx, c, p.spec.ImageName, p.info.ID))
		})
	if id != "" {
		res.mu.Lock()
		res.created = append(res.created, publishedCopy{cloud: c, image: openstack.Image{ID: id, Name: p.spec.ImageName}})
		res.mu.Unlock()
		p.observe.Emit(Event{Kind: Made, What: p.imageLeft(c.Name(), id)})
	}
	return id, err
}

// cleanupCopies removes the scratch file and, when the build failed,
// every image of this build in the upload clouds: those it created and any
// other (a create whose reply was lost).
func (p *publication) cleanupCopies(ctx context.Context, failed bool) error {
	res := p.copies
	if res == nil {
		return nil
	}
	var errsList []error
	res.mu.Lock()
	files := []string{res.tmp}
	for _, f := range slices.Sorted(maps.Keys(res.converted)) {
		files = append(files, res.converted[f].path)
	}
	res.mu.Unlock()
	for _, f := range files {
		if f == "" {
			continue
		}
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errsList = append(errsList, err)
		} else {
			p.observe.Emit(Event{Kind: Removed, What: Left{Kind: "file", Name: f}})
		}
	}
	if !failed {
		return errors.Join(errsList...)
	}
	res.mu.Lock()
	created := append([]publishedCopy(nil), res.created...)
	clouds := append([]Cloud(nil), res.clouds...)
	res.mu.Unlock()
	for _, c := range clouds {
		ids, err := imagesOfBuild(ctx, c, p.spec.ImageName, p.info.ID)
		if err != nil {
			errsList = append(errsList, fmt.Errorf("cloud %s: %w", c.Name(), err))
		}
		for _, known := range created {
			if known.cloud == c && !slices.Contains(ids, known.image.ID) {
				ids = append(ids, known.image.ID)
			}
		}
		for _, id := range ids {
			if err := c.DeleteImage(ctx, id); err != nil {
				errsList = append(errsList, fmt.Errorf("cloud %s: %w", c.Name(), err))
				continue
			}
			p.observe.Emit(Event{Kind: Removed, What: p.imageLeft(c.Name(), id)})
			p.log.Info("copy of the failed build deleted", "cloud", c.Name(), "id", id)
		}
	}
	return errors.Join(errsList...)
}

// images are the build's images per cloud: the home image and the copies.
func (p *publication) images() map[string]publishedCopy {
	imgs := map[string]publishedCopy{}
	if p.home != nil {
		imgs[p.spec.Cloud] = *p.home
	}
	if p.copies != nil {
		p.copies.mu.Lock()
		for name, c := range p.copies.done {
			imgs[name] = c
		}
		p.copies.mu.Unlock()
	}
	return imgs
}

// publish describes every image (properties, published marker, visibility)
// in one update each, which also unhides a copy (each was created hidden
// and has been checked by now), and records the result in PublishClouds
// order.
func (p *publication) publish(ctx context.Context) error {
	props := p.imageProperties(true)
	imgs := p.images()
	for _, name := range p.order() {
		c, ok := imgs[name]
		if !ok {
			return errs.New(errs.KindInternal, "no image in cloud %s to publish", name)
		}
		u := openstack.ImageUpdate{Properties: props, Visibility: string(p.spec.Visibility), Unhide: c.image.Hidden}
		if err := c.cloud.UpdateImage(ctx, c.image.ID, u); err != nil {
			return errs.Wrap(errs.KindPublish, err, "publishing image %s in cloud %s", c.image.ID, name)
		}
		p.observe.Emit(Event{Kind: Removed, What: p.imageLeft(name, c.image.ID)}) // published: meant to stay
		p.log.Info("image published", "cloud", name, "image", c.image.Name, "id", c.image.ID, "visibility", string(p.spec.Visibility))
	}
	p.published = nil
	for _, name := range p.spec.PublishClouds() {
		c := imgs[name]
		p.published = append(p.published, config.PublishedImage{Cloud: name, ID: c.image.ID, Name: c.image.Name, Checksum: c.image.Checksum,
			DiskFormat: c.image.DiskFormat, ManifestSHA256: p.manifestSHA256(), Manifest: p.manifest})
	}
	return nil
}

// prune deletes old revisions in every cloud that got an image. A failure
// is not a step failure (that would unpublish the new images): it is kept
// for result.
func (p *publication) prune(ctx context.Context) error {
	imgs := p.images()
	var failed []error
	for _, name := range p.order() {
		c := imgs[name]
		_, err := Prune(ctx, c.cloud, name, PrunePolicy{
			Name: p.spec.ImageName, Owner: c.cloud.ProjectID(), Keep: p.spec.KeepRevisions,
			JustPublished: c.image.ID, AdoptUnmarked: p.spec.AdoptUnmarked,
			Protect: p.spec.Protect,
		}, p.log)
		if err != nil {
			failed = append(failed, err)
		}
	}
	if len(failed) > 0 {
		p.pruneErr = errors.Join(failed...)
		p.log.Error("pruning old revisions failed; the new images stay published", "error", p.pruneErr)
	}
	return nil
}

// publishSteps are the shared steps after the builder made its image:
// copy (named copyName, running copyRun), then the builder's own steps
// before (the local builder's output file), keeping the manifest by image
// ID, publish and prune. Nothing
// after publish can fail the build, so nothing published is undone.
func (p *publication) publishSteps(copyName string, copyRun func(context.Context) error, before ...Step) []Step {
	steps := []Step{{Name: copyName, Timeout: p.spec.Timeouts.Copy, TimeoutFlag: "--copy-timeout", Run: copyRun, Cleanup: p.cleanupCopies}}
	steps = append(steps, before...)
	steps = append(steps, Step{Name: "keep manifest", Timeout: keepManifestTimeout, Run: p.keepManifests, Cleanup: p.forgetManifests})
	return append(steps,
		Step{Name: "publish", Timeout: publishTimeout, Run: p.publish},
		Step{Name: "prune", Timeout: pruneTimeout, Run: p.prune},
	)
}

// result turns how the steps ended into the build's result. Before
// publishing, a failure returns no image (the cleanups removed them).
// Once published, the images stay and are returned with the error: a
// cleanup or pruning failure is errs.KindPartial (exit 10), an interrupted
// pruning errs.KindInterrupted.
func (p *publication) result(ctx context.Context, err error) ([]config.PublishedImage, error) {
	if err != nil {
		var re *RunError
		if !errors.As(err, &re) || len(re.Leftovers) == 0 {
			return nil, err
		}
		withHint := err
		if p.spec.Cloud != "" {
			withHint = fmt.Errorf("%w; list what is left with `%s` and remove it without --dry-run", err,
				config.SweepDryRunCommand(p.spec.Cloud, p.spec.Prefix))
		}
		if re.Err == nil && len(p.published) > 0 {
			// Only a cleanup failed: the published images are good and stay.
			return p.published, errs.Wrap(errs.KindPartial, withHint, "the image was built and published, but cleaning up failed")
		}
		return nil, &errs.Error{Kind: errs.KindOf(err), Err: withHint}
	}
	if p.pruneErr != nil {
		// Old revisions remain until a later run prunes them.
		if ctx.Err() != nil {
			return p.published, errs.Wrap(errs.KindInterrupted, p.pruneErr,
				"interrupted while pruning: the image was built and published; old revisions remain (the next run prunes them)")
		}
		return p.published, errs.Wrap(errs.KindPartial, p.pruneErr,
			"the image was built and published, but old revisions were not all pruned (the next run prunes them)")
	}
	return p.published, nil
}
