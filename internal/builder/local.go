package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/baseimage"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
	"github.com/runner-image-builder/github-runner-image-builder/internal/qemu"
	"github.com/runner-image-builder/github-runner-image-builder/internal/recipe"
	"github.com/runner-image-builder/github-runner-image-builder/internal/release"
	"github.com/runner-image-builder/github-runner-image-builder/internal/statedir"
)

// Local is the local builder (`--builder local`): it boots the base image
// under qemu on this host with the same user-data, provisions it with the
// same guest steps as the openstack builder, powers it off, writes the disk
// flattened and compressed to --output, and optionally publishes that file
// to --upload-clouds through the same copy, property and prune path.
//
// Keep one Local per process: it probes the accelerator once. Its zero
// value works.
type Local struct {
	// OpenStack gives the clouds of --upload-clouds (Connect), the
	// environment (Getenv) and the version recorded on images; nil means
	// a zero OpenStack.
	OpenStack *OpenStack
	// HTTP fetches --script-url; nil means a client with a 2 minute timeout.
	HTTP *http.Client
	// Accel decides between KVM and TCG; nil means a probe made on first use.
	Accel *qemu.AccelProbe
	// Progress receives progress lines for the long phases (a terminal);
	// nil, or a JSON logger, means none.
	Progress io.Writer
	// Output receives the script's output; nil logs it at info level.
	Output io.Writer
	// CleanupTimeout bounds each cleanup (default 5 minutes).
	CleanupTimeout time.Duration

	// The VM's size: zero means 2 vCPU, 2 GiB of memory, a 20 GiB disk
	// (the openstack builder's minimum flavor).
	MemoryMiB int
	CPUs      int
	DiskSize  int64
	// QEMU and QEMUImg override the programs (tests).
	QEMU, QEMUImg string

	mu     sync.Mutex
	probe  *qemu.AccelProbe
	onVM   func(*qemu.VM) // tests: told about each VM started
	ticker func() (<-chan time.Time, func())
}

// Local builder defaults and bounds of steps without a flag.
const (
	localDefaultMemoryMiB = 2048
	localDefaultCPUs      = 2
	localDefaultDiskSize  = 20 << 30
	baseImageTimeout      = 60 * time.Minute // the fetcher retries stalls on its own
	shutdownTimeout       = 5 * time.Minute  // the guest powers off by itself
	powerdownAfter        = 2 * time.Minute  // then an ACPI power button press
	localPrepareTimeout   = 5 * time.Minute
)

// NewLocal returns the local builder, publishing through os (may be nil)
// and writing progress lines to progress (nil: none).
func NewLocal(os *OpenStack, progress io.Writer) *Local {
	return &Local{OpenStack: os, Progress: progress}
}

func (l *Local) openstack() *OpenStack {
	if l.OpenStack == nil {
		return &OpenStack{}
	}
	return l.OpenStack
}

func (l *Local) accelProbe(log *slog.Logger) *qemu.AccelProbe {
	if l.Accel != nil {
		return l.Accel
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.probe == nil {
		l.probe = &qemu.AccelProbe{QEMU: l.QEMU, Log: log}
	}
	return l.probe
}

// localBuild is one local run: its inputs and what its steps produce.
type localBuild struct {
	l        *Local
	log      *slog.Logger
	spec     config.RunSpec
	runner   release.Release
	userData []byte
	info     buildInfo
	prog     *progress

	output  string      // absolute --output
	partial string      // the export, renamed to output at the end
	in      guestInputs // read by "prepare"
	base    baseimage.Image
	vm      *qemu.VM

	uploads   *copyResult
	published []config.PublishedImage
	placed    bool // the image is at output
}

// Run builds spec's image locally and writes it to spec.Output; with
// spec.UploadClouds it also publishes it there and returns one image per
// cloud, in that order. On failure or interruption nothing is left: no
// qemu process, no temporary file, no file at spec.Output, no image in any
// cloud.
func (l *Local) Run(ctx context.Context, log *slog.Logger, spec config.RunSpec, runner release.Release, userData []byte) ([]config.PublishedImage, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if spec.Builder != config.BuilderLocal {
		return nil, errs.New(errs.KindInternal, "the local builder was given a %s build", spec.Builder)
	}
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	out, err := filepath.Abs(spec.Output)
	if err != nil {
		return nil, errs.Wrap(errs.KindUsage, err, "--output %s", spec.Output)
	}
	if userData, err = localUserData(log, spec, runner, userData); err != nil {
		return nil, err
	}
	b := &localBuild{l: l, spec: spec, runner: runner, userData: userData, output: out}
	b.info = buildInfo{
		ID: newBuildID(), Prefix: spec.Prefix, Arch: spec.Arch, Base: spec.Base,
		RunnerVersion: runner.Version, Time: l.openstack().now(), BuilderVersion: l.openstack().Version,
	}
	b.partial = filepath.Join(filepath.Dir(out), "."+filepath.Base(out)+".grib-"+b.info.ID)
	b.log = log.With("build_id", b.info.ID)
	b.prog = newProgress(l.Progress, log, l.ticker)
	b.log.Info("local build", "image", spec.ImageName, "output", out, "upload_clouds", spec.UploadClouds, "isolated", spec.Isolated)
	r := &Runner{Log: b.log, CleanupTimeout: l.CleanupTimeout}
	if err := r.Run(ctx, b.prog.wrap(b.steps())); err != nil {
		return nil, err
	}
	b.prog.printf("image written to %s", out)
	return b.published, nil
}

// localUserData adapts the user-data to the guest's view of --proxy: a
// proxy on this host's 127.0.0.1 is at 10.0.2.2 for the guest, so the
// built-in recipe is rendered again with that address.
func localUserData(log *slog.Logger, spec config.RunSpec, runner release.Release, userData []byte) ([]byte, error) {
	guestProxy, err := qemu.GuestProxy(spec.Proxy, spec.Isolated)
	if err != nil || guestProxy == spec.Proxy {
		return userData, err
	}
	if spec.UserDataFile != "" {
		log.Warn("the guest reaches the proxy at another address than --proxy; --user-data is used as given",
			"proxy", spec.Proxy, "guest_proxy", guestProxy)
		return userData, nil
	}
	log.Info("the guest reaches the proxy through qemu's host alias", "proxy", spec.Proxy, "guest_proxy", guestProxy)
	data, err := recipe.Render(recipe.Params{Arch: spec.Arch, Base: spec.Base, Runner: runner, Proxy: guestProxy})
	if err != nil {
		return nil, fmt.Errorf("rendering the recipe for the guest's proxy address: %w", err)
	}
	return data, nil
}

// steps is the whole local build, in order, in one place.
func (b *localBuild) steps() []Step {
	spec := b.spec
	unlock := func() {}
	steps := []Step{
		{Name: "lock", Run: func(context.Context) error {
			u, err := b.lock()
			if err == nil {
				unlock = u
			}
			return err
		}, Cleanup: func(context.Context, bool) error { unlock(); return nil }},
		{Name: "prepare", Timeout: localPrepareTimeout, Run: b.prepare},
		{Name: "base image", Timeout: baseImageTimeout, Run: b.fetchBase},
		{Name: "vm", Timeout: spec.Timeouts.Boot, TimeoutFlag: "--boot-timeout", Run: b.startVM, Cleanup: b.closeVM},
	}
	guest := GuestConfig{
		Address:                  func(context.Context) (string, error) { return b.vm.SSHAddr(), nil },
		Console:                  func(ctx context.Context) (string, error) { return b.vm.ConsoleOutput(ctx) },
		InsecureSkipHostKeyCheck: spec.InsecureSkipHostKeyCheck,
		Secrets:                  spec.Secrets,
		Timeouts:                 spec.Timeouts,
		Log:                      b.log,
		Output:                   b.l.Output,
	}
	steps = append(steps, guestSteps(guest, b.in.complete, spec.ScriptURL != "", &GuestSession{})...)
	steps = append(steps,
		Step{Name: "shutdown", Timeout: shutdownTimeout, Run: b.waitShutdown},
		Step{Name: "export", Timeout: spec.Timeouts.Snapshot, TimeoutFlag: "--snapshot-timeout", Run: b.export, Cleanup: b.removePartial},
	)
	if len(spec.UploadClouds) > 0 {
		steps = append(steps,
			Step{Name: "upload", Timeout: spec.Timeouts.Copy, TimeoutFlag: "--copy-timeout", Run: b.upload, Cleanup: b.cleanupUploads},
			Step{Name: "publish", Timeout: publishTimeout, Run: b.publish},
		)
	}
	steps = append(steps, Step{Name: "output", Run: b.place, Cleanup: b.unplace})
	if len(spec.UploadClouds) > 0 {
		steps = append(steps, Step{Name: "prune", Timeout: pruneTimeout, Run: b.prune})
	}
	return steps
}

// lock keeps two runs on this host from writing the same --output.
func (b *localBuild) lock() (func(), error) {
	dir, err := config.StateDir(b.l.openstack().getenv(), b.spec.Prefix)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory %s: %w", dir, err)
	}
	unlock, err := statedir.TryLock(filepath.Join(dir, localLockName(b.output)))
	if err != nil {
		return nil, fmt.Errorf("another local build is writing %s: %w", b.output, err)
	}
	return unlock, nil
}

// localLockName is the state directory's lock file of local builds to the
// absolute path output.
func localLockName(output string) string {
	sum := sha256.Sum256([]byte(output))
	return "local-" + hex.EncodeToString(sum[:8]) + ".lock"
}

// prepare reads what the build needs before a VM exists: the key, the
// user's script, the checks; and makes sure the output can be written.
func (b *localBuild) prepare(ctx context.Context) error {
	if fi, err := os.Stat(b.output); err == nil && fi.IsDir() {
		return errs.Usage("--output %s is a directory: give the path of the image file", b.spec.Output)
	}
	probe, err := os.CreateTemp(filepath.Dir(b.output), ".grib-write-test-*")
	if err != nil {
		return errs.Wrap(errs.KindUsage, err, "--output %s: its directory must exist and be writable", b.spec.Output)
	}
	_ = probe.Close()
	_ = os.Remove(probe.Name())

	b.in, err = prepareGuestInputs(ctx, b.l.openstack().getenv(), b.l.HTTP, b.spec, b.runner.Version, b.log)
	return err
}

// fetchBase finds the base image: --base-image-file, or the verified cache
// (downloading into it from the mirror if needed).
func (b *localBuild) fetchBase(ctx context.Context) error {
	f := &baseimage.Fetcher{Mirror: b.spec.BaseImageURL, Log: b.log}
	if b.spec.BaseImageFile == "" {
		cache := b.spec.CacheDir
		if cache == "" {
			var err error
			if cache, err = config.CacheDir(b.l.openstack().getenv()); err != nil {
				return err
			}
		}
		f.CacheDir = BaseImageCacheDir(cache)
	}
	img, err := f.Fetch(ctx, baseimage.Spec{Base: b.spec.Base, Arch: b.spec.Arch, Serial: b.spec.BaseImageSerial,
		File: b.spec.BaseImageFile, SHA256: b.spec.BaseImageSHA256})
	if err != nil {
		return fmt.Errorf("base image %s %s: %w", b.spec.Base, b.spec.Arch, err)
	}
	b.base = img
	b.log.Info("base image", "file", img.Path, "sha256", img.SHA256, "verified", img.Verified)
	return nil
}

func (b *localBuild) startVM(ctx context.Context) error {
	l := b.l
	accel, reason := l.accelProbe(b.log).Accel(ctx)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	b.log.Info("qemu accelerator", "accel", string(accel), "reason", reason)
	vm, err := qemu.Start(ctx, qemu.Spec{
		BaseImage: b.base.Path, Arch: b.spec.Arch,
		MemoryMiB: orDefault(l.MemoryMiB, localDefaultMemoryMiB), CPUs: orDefault(l.CPUs, localDefaultCPUs),
		DiskSize: int64(orDefault(int(l.DiskSize), localDefaultDiskSize)),
		UserData: b.userData, AuthorizedKeys: []string{b.in.key.AuthorizedKey},
		Isolated: b.spec.Isolated, Accel: accel, TempDir: filepath.Dir(b.output),
		QEMU: l.QEMU, QEMUImg: l.QEMUImg, Log: b.log,
	})
	if err != nil {
		return err
	}
	b.vm = vm
	l.openstack().Ledger.add(Left{Kind: "directory", Name: vm.Dir()})
	if l.onVM != nil {
		l.onVM(vm)
	}
	if accel == qemu.AccelTCG {
		b.prog.printf("no usable KVM here (the log says why): the guest runs under TCG emulation, expect minutes per phase")
	}
	return nil
}

func orDefault(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// closeVM kills qemu if it still runs and removes its files.
func (b *localBuild) closeVM(context.Context, bool) error {
	if b.vm == nil {
		return nil
	}
	return b.closeVMFiles()
}

// closeVMFiles closes the VM and, once its directory is gone, takes it off
// the ledger.
func (b *localBuild) closeVMFiles() error {
	err := b.vm.Close()
	if err == nil {
		b.l.openstack().Ledger.remove(Left{Kind: "directory", Name: b.vm.Dir()})
	}
	return err
}

// waitShutdown waits for the guest, told to power off by the guest steps,
// to stop qemu; after powerdownAfter it presses the ACPI power button too.
func (b *localBuild) waitShutdown(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, powerdownAfter)
	err := b.vm.Wait(wctx)
	cancel()
	if err != nil && b.vm.Running() && ctx.Err() == nil {
		b.log.Warn("the guest has not powered off yet; pressing its power button", "after", powerdownAfter)
		if perr := b.vm.Powerdown(ctx); perr != nil {
			b.log.Warn("ACPI power button", "error", perr)
		}
		err = b.vm.Wait(ctx)
	}
	if err != nil {
		if b.vm.Running() {
			return errs.Wrap(errs.KindBuild, err, "the guest did not power off")
		}
		return errs.Wrap(errs.KindBuild, err, "the guest's qemu failed")
	}
	if ev := b.vm.Shutdown(); ev != nil {
		b.log.Info("guest powered off", "reason", ev.Reason)
		if ev.Reason == "guest-reset" {
			return errs.New(errs.KindBuild, "the guest rebooted instead of powering off")
		}
	}
	return nil
}

// export writes the flattened, compressed disk beside --output (renamed
// into place by the "output" step) and frees the VM's overlay.
func (b *localBuild) export(ctx context.Context) error {
	ph := b.prog.current()
	err := b.vm.Export(ctx, b.partial, func(pct float64) { ph.set(fmt.Sprintf("%.0f%%", pct)) })
	if err != nil {
		return err
	}
	if err := b.closeVMFiles(); err != nil {
		b.log.Warn("removing the VM's files", "error", err)
	}
	if fi, err := os.Stat(b.partial); err == nil {
		b.log.Info("image exported", "bytes", fi.Size())
	}
	return nil
}

// removePartial removes the export if it was not renamed into place.
func (b *localBuild) removePartial(context.Context, bool) error {
	if err := os.Remove(b.partial); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// upload copies the exported file to every --upload-clouds cloud at once,
// through the openstack builder's copy path: created without the
// published marker, uploaded, waited for and checked against the file's
// size and checksums.
func (b *localBuild) upload(ctx context.Context) error {
	f, err := os.Open(b.partial)
	if err != nil {
		return err
	}
	defer f.Close()
	d, err := fileDigests(ctx, f)
	if err != nil {
		return fmt.Errorf("hashing %s: %w", b.partial, err)
	}
	src := func(context.Context) io.ReadSeeker { return io.NewSectionReader(f, 0, d.Size) }
	res := &copyResult{done: map[string]publishedCopy{}, want: &d}
	b.uploads = res
	ob := &osBuild{o: b.l.openstack(), log: b.log, spec: b.spec, info: b.info,
		snapshot: &openstack.Image{Name: b.spec.ImageName, DiskFormat: "qcow2", ContainerFormat: "bare"}}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(b.spec.UploadClouds))
	for _, name := range b.spec.UploadClouds {
		go func() {
			err := ob.copyTo(cctx, name, res, src)
			if err != nil {
				cancel()
			}
			errc <- err
		}()
	}
	var failed, cancelled []error
	for range b.spec.UploadClouds {
		switch err := <-errc; {
		case err == nil:
		case errors.Is(err, context.Canceled) && ctx.Err() == nil:
			cancelled = append(cancelled, err)
		default:
			failed = append(failed, err)
		}
	}
	if len(failed) == 0 {
		failed = cancelled
	}
	if len(failed) > 0 {
		if ctx.Err() != nil {
			return errors.Join(failed...)
		}
		return errs.Wrap(errs.KindPublish, errors.Join(failed...), "uploading %s to %v", b.spec.ImageName, b.spec.UploadClouds)
	}
	return nil
}

// cleanupUploads deletes every uploaded image when the build failed.
func (b *localBuild) cleanupUploads(ctx context.Context, failed bool) error {
	res := b.uploads
	if res == nil || !failed {
		return nil
	}
	res.mu.Lock()
	created := append([]publishedCopy(nil), res.created...)
	res.mu.Unlock()
	var errList []error
	for _, c := range created {
		if err := c.cloud.DeleteImage(ctx, c.image.ID); err != nil {
			errList = append(errList, fmt.Errorf("cloud %s: %w", c.cloud.Name(), err))
			continue
		}
		b.log.Info("upload of the failed build deleted", "cloud", c.cloud.Name(), "id", c.image.ID)
	}
	return errors.Join(errList...)
}

// publish describes every uploaded image (properties, published marker,
// visibility), as the openstack builder does, and records the result in
// --upload-clouds order.
func (b *localBuild) publish(ctx context.Context) error {
	props := b.info.imageProperties(true)
	b.published = nil
	for _, name := range b.spec.UploadClouds {
		c, ok := b.uploads.done[name]
		if !ok {
			return errs.New(errs.KindInternal, "no image in cloud %s to publish", name)
		}
		if err := c.cloud.UpdateImage(ctx, c.image.ID, props, string(b.spec.Visibility)); err != nil {
			return errs.Wrap(errs.KindPublish, err, "publishing image %s in cloud %s", c.image.ID, name)
		}
		b.log.Info("image published", "cloud", name, "image", c.image.Name, "id", c.image.ID, "visibility", string(b.spec.Visibility))
		b.published = append(b.published, config.PublishedImage{Cloud: name, ID: c.image.ID, Name: c.image.Name, Checksum: c.image.Checksum})
	}
	return nil
}

// place renames the export to --output.
func (b *localBuild) place(context.Context) error {
	if err := os.Rename(b.partial, b.output); err != nil {
		return errs.Wrap(errs.KindBuild, err, "writing %s", b.spec.Output)
	}
	b.placed = true
	if d, err := os.Open(filepath.Dir(b.output)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// unplace removes --output again when a later step (prune) failed: a
// failed build leaves no file there.
func (b *localBuild) unplace(_ context.Context, failed bool) error {
	if !failed || !b.placed {
		return nil
	}
	if err := os.Remove(b.output); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// prune deletes old revisions in every upload cloud, as the openstack builder does.
func (b *localBuild) prune(ctx context.Context) error {
	var failed []error
	for _, name := range b.spec.UploadClouds {
		c := b.uploads.done[name]
		_, err := Prune(ctx, c.cloud, name, PrunePolicy{
			Name: b.spec.ImageName, Owner: c.cloud.ProjectID(), Keep: b.spec.KeepRevisions,
			JustPublished: c.image.ID, AdoptUnmarked: b.spec.AdoptUnmarked,
			Protect: b.spec.Protect,
		}, b.log)
		if err != nil {
			failed = append(failed, err)
		}
	}
	if len(failed) > 0 {
		return errs.Wrap(errs.KindPublish, errors.Join(failed...), "pruning old revisions")
	}
	return nil
}

// Init is `init --builder local`: it downloads and verifies the base images
// into the cache (or checks --base-image-file) and touches no cloud.
func (l *Local) Init(ctx context.Context, log *slog.Logger, spec config.InitSpec) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if spec.Builder != config.BuilderLocal {
		return errs.New(errs.KindInternal, "the local builder was given a %s init", spec.Builder)
	}
	if err := spec.Validate(); err != nil {
		return err
	}
	prog := newProgress(l.Progress, log, l.ticker)
	f := &baseimage.Fetcher{Mirror: spec.BaseImageURL, CacheDir: BaseImageCacheDir(spec.CacheDir), Log: log}
	for _, s := range BaseImageSpecs(spec) {
		ph := prog.start(fmt.Sprintf("base image %s %s", s.Base, s.Arch))
		img, err := f.Fetch(ctx, s)
		ph.end(err)
		if err != nil {
			return fmt.Errorf("base image %s %s: %w", s.Base, s.Arch, err)
		}
		log.Info("base image ready", "base", string(s.Base), "arch", string(s.Arch), "file", img.Path,
			"sha256", img.SHA256, "verified", img.Verified)
	}
	return nil
}
