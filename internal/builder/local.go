package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/atomicfile"
	"github.com/runner-image-builder/github-runner-image-builder/internal/baseimage"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/manifest"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
	"github.com/runner-image-builder/github-runner-image-builder/internal/provision"
	"github.com/runner-image-builder/github-runner-image-builder/internal/qemu"
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
	// Accel decides between KVM and TCG; nil means a probe made on first use.
	Accel *qemu.AccelProbe
	// Progress receives progress lines for the long phases (a terminal);
	// nil means none.
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

	// OnVM, if set, is told about each VM started (tests count and check them).
	OnVM func(*qemu.VM)

	mu     sync.Mutex
	probe  *qemu.AccelProbe
	ticker func() (<-chan time.Time, func())
	// withoutGuest (tests) boots nothing: the base image file is exported
	// as the built image, so the publishing path runs without a guest.
	withoutGuest bool
	// guestAt (tests) boots nothing either, but runs the guest steps on the
	// SSH server at this address (a testenv.ShellGuest) before the base
	// image file is exported as the built image.
	guestAt string
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
		l.probe = &qemu.AccelProbe{QEMU: l.QEMU, Getenv: l.openstack().getenv(), Log: log}
	}
	return l.probe
}

// localBuild is one local run: its inputs and what its steps produce.
type localBuild struct {
	l    *Local
	log  *slog.Logger
	spec config.RunSpec
	job  Job
	info buildInfo
	prog *progress
	pub  *publication // upload, publish, prune

	output   string          // absolute --output
	partial  string          // the export, renamed to output at the end
	key      statedir.Key    // read by "prepare"
	jump     *provision.Jump // --ssh-jump (SSHJump), read by "prepare"; nil: direct
	hostKey  provision.BuildHostKey
	userData []byte // the job's, with hostKey: made by "prepare"
	base     baseimage.Image
	vm       *qemu.VM
	placed   bool // the image is at output

	sess *GuestSession   // the guest steps' SSH session
	done context.Context // the build's context: a kept VM waits for it (KeepOnFailure)
	// manifestPlaced: the manifest is beside output (ManifestBeside)
	manifestPlaced bool
}

// Build builds the job's image locally and writes it to Spec.Output; with
// Spec.UploadClouds it also publishes it there and returns one image per
// cloud, in that order. On failure or interruption before publishing
// nothing is left: no qemu process, no temporary file, no file at
// Spec.Output, no image in any cloud. Once published, the images and the
// output stay, as with the openstack builder (see publication.result).
func (l *Local) Build(ctx context.Context, log *slog.Logger, job Job) ([]config.PublishedImage, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	spec := job.Spec
	if spec.Builder != config.BuilderLocal {
		return nil, errs.New(errs.KindInternal, "the local builder was given a %s build", spec.Builder)
	}
	out, err := filepath.Abs(spec.Output)
	if err != nil {
		return nil, errs.Wrap(errs.KindUsage, err, "--output %s", spec.Output)
	}
	b := &localBuild{l: l, spec: spec, job: job, output: out, sess: &GuestSession{}, done: ctx}
	o := l.openstack()
	connect, err := o.connector(spec.CloudsPaths, spec.HostProxy)
	if err != nil {
		return nil, err
	}
	b.info = newBuildInfo(spec, job.Runner, o.now(), o.Version)
	b.partial = filepath.Join(filepath.Dir(out), "."+filepath.Base(out)+".grib-"+b.info.ID)
	b.log = log.With("build_id", b.info.ID)
	b.prog = newProgress(l.Progress, l.ticker, o.now)
	b.pub = &publication{connect: connect, log: b.log, spec: spec, info: b.info, observe: job.Observe,
		format:   openstack.Image{DiskFormat: "qcow2", ContainerFormat: "bare"},
		stateDir: func() (string, error) { return config.StateDir(o.getenv(), spec.Prefix) }}
	b.log.Info("local build", "image", spec.ImageName, "output", out, "upload_clouds", spec.UploadClouds, "isolated", spec.Isolated)
	r := &Runner{Log: b.log, CleanupTimeout: l.CleanupTimeout, Observe: Observers(b.prog.observe, job.Observe)}
	imgs, err := b.pub.result(ctx, r.Run(ctx, b.steps()))
	if b.placed {
		b.prog.printf("image written to %s", out)
	}
	return imgs, err
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
	}
	guest := jobGuestConfig(b.job, b.log, b.l.Output)
	guest.Address = func(context.Context) (string, error) { return b.vm.SSHAddr(), nil }
	guest.Console = func(ctx context.Context) (string, error) { return b.vm.ConsoleOutput(ctx) }
	guest.Manifest = func() manifest.Manifest {
		return newManifest(b.job, b.info, manifest.BaseImage{Serial: b.base.Serial, SHA256: b.base.SHA256})
	}
	guest.KeepManifest = func(data []byte) { b.pub.manifest = data }
	if b.l.guestAt != "" {
		guest.Address = func(context.Context) (string, error) { return b.l.guestAt, nil }
		guest.Console = func(context.Context) (string, error) { return "", nil }
		steps = append(steps, guestSteps(guest, b.withKey, &GuestSession{})...)
	} else if !b.l.withoutGuest {
		steps = append(steps, Step{Name: "vm", Timeout: spec.Timeouts.Boot, TimeoutFlag: "--boot-timeout", Run: b.startVM, Cleanup: b.closeVM})
		steps = append(steps, guestSteps(guest, b.withKey, b.sess)...)
		steps = append(steps, Step{Name: "shutdown", Timeout: shutdownTimeout, Run: b.waitShutdown})
	}
	steps = append(steps,
		Step{Name: "export", Timeout: spec.Timeouts.Snapshot, TimeoutFlag: "--snapshot-timeout", Run: b.export, Cleanup: b.removePartial},
	)
	output := Step{Name: "output", Run: b.place, Cleanup: b.unplace}
	if len(spec.UploadClouds) == 0 {
		return append(steps, output)
	}
	return append(steps, b.pub.publishSteps("upload", b.upload, output)...)
}

// withKey completes the guest configuration with the keys "prepare" made.
func (b *localBuild) withKey(c GuestConfig) GuestConfig {
	c.Signer, c.Jump = b.key.Signer, b.jump
	c.HostKey = b.hostKey.PublicKey()
	return c
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

	if b.key, err = prefixKey(ctx, b.l.openstack().getenv(), b.spec.Prefix); err != nil {
		return err
	}
	if b.jump, err = SSHJump(b.spec.SSHJump, b.l.openstack().getenv(), b.log); err != nil {
		return err
	}
	b.hostKey, b.userData, err = guestHostKey(b.l.openstack().hostKeys, b.job.UserData, b.log)
	return err
}

// fetchBase finds the base image: --base-image-file, or the verified cache
// (downloading into it from the mirror if needed).
func (b *localBuild) fetchBase(ctx context.Context) error {
	state, err := config.StateDir(b.l.openstack().getenv(), b.spec.Prefix)
	if err != nil {
		return err
	}
	f := &baseimage.Fetcher{Mirror: b.spec.BaseImageURL, Log: b.log, StateDir: state, Proxy: b.spec.HostProxy.ProxyFunc()}
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
		UserData: b.userData, AuthorizedKeys: []string{b.key.AuthorizedKey},
		Isolated: b.spec.Isolated, Accel: accel, TempDir: filepath.Dir(b.output),
		QEMU: l.QEMU, QEMUImg: l.QEMUImg, Getenv: l.openstack().getenv(), Log: b.log,
	})
	if err != nil {
		return err
	}
	b.vm = vm
	b.job.Observe.Emit(Event{Kind: Made, What: Left{Kind: "directory", Name: vm.Dir()}})
	if l.OnVM != nil {
		l.OnVM(vm)
	}
	if accel == qemu.AccelTCG {
		b.prog.printf("the guest runs under TCG emulation, expect minutes per phase: %s", reason)
	}
	return nil
}

func orDefault(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// closeVM kills qemu if it still runs and removes its files. After a
// failure with KeepOnFailure it first keeps the VM running, says how to
// reach it and waits for Ctrl-C (or SIGTERM): a local VM cannot outlive
// the process that runs it without being leaked.
func (b *localBuild) closeVM(_ context.Context, failed bool) error {
	if b.vm == nil {
		return nil
	}
	if failed && b.spec.KeepOnFailure && b.done.Err() == nil {
		b.holdVM()
	}
	return b.closeVMFiles()
}

// holdVM prints how to reach the failed build's VM and waits until the
// build's context is done.
func (b *localBuild) holdVM() {
	say := func(format string, args ...any) {
		if b.prog != nil {
			b.prog.printf(format, args...)
			return
		}
		b.log.Warn(fmt.Sprintf(format, args...))
	}
	holdForDebugging(b.done, say, b.vm.Dir(), b.key.Path, b.spec.SSHJump, b.sess.endpoint())
}

// holdForDebugging says how to reach a kept local VM (its SSH endpoint e,
// nil when SSH never answered, with the private key keyFile; the pinned
// host key goes to a known_hosts file in the VM's directory dir; through
// jump when set) and waits until done ends.
func holdForDebugging(done context.Context, say func(string, ...any), dir, keyFile string, jump config.SSHJump, e *guestEndpoint) {
	say("The build failed; its VM is left running for debugging (--keep-on-failure). Ctrl-C removes it.")
	if e != nil {
		path := filepath.Join(dir, "known_hosts")
		if err := writeKnownHosts(path, e.addr, e.hostKey); err == nil {
			say("  Reach it:  %s", config.SSHCommandVia(jump, e.addr, e.user, keyFile, path))
		}
	} else {
		say("  SSH never answered; its console is in %s", dir)
	}
	<-done.Done()
}

// closeVMFiles closes the VM and, once its directory is gone, takes it off
// the ledger.
func (b *localBuild) closeVMFiles() error {
	err := b.vm.Close()
	if err == nil {
		b.job.Observe.Emit(Event{Kind: Removed, What: Left{Kind: "directory", Name: b.vm.Dir()}})
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
	if b.vm == nil { // withoutGuest, guestAt
		return copyFile(ctx, b.base.Path, b.partial)
	}
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
// through the shared copy path: created without the published marker,
// uploaded, waited for and checked against the file's size and checksums.
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
	res := &copyResult{done: map[string]publishedCopy{}, want: &d}
	b.pub.copies = res
	// The meter counts the uploads of the file itself; converted ones are not metered.
	m := b.prog.current().meter(d.Size * int64(b.pub.uploadsOf(b.pub.format.DiskFormat)))
	var conv *converter // for the clouds that want another disk format
	if b.pub.needsConversion() {
		getenv := b.l.openstack().getenv()
		conv = &converter{path: b.partial, format: b.pub.format.DiskFormat, dir: scratchDir(b.spec, getenv), getenv: getenv, qemuImg: b.l.QEMUImg}
	}
	return b.pub.copyAll(ctx, res, func(context.Context) io.ReadSeeker { return m.reader(io.NewSectionReader(f, 0, d.Size)) }, nil, conv)
}

// ManifestBeside is where a local build keeps the image's manifest: beside
// the image file output, as output.manifest.json.
func ManifestBeside(output string) string { return output + ".manifest.json" }

// place renames the export to --output, the manifest beside it first.
func (b *localBuild) place(context.Context) error {
	if b.pub.manifest != nil {
		if err := atomicfile.Write(ManifestBeside(b.output), b.pub.manifest, 0o644); err != nil {
			return errs.Wrap(errs.KindBuild, err, "writing the manifest beside %s", b.spec.Output)
		}
		b.manifestPlaced = true
	}
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

// unplace removes --output again when a later step (publish) failed: a
// failed build leaves no file there.
func (b *localBuild) unplace(_ context.Context, failed bool) error {
	if !failed {
		return nil
	}
	if b.manifestPlaced {
		if err := os.Remove(ManifestBeside(b.output)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if !b.placed {
		return nil
	}
	if err := os.Remove(b.output); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
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
	state, err := config.StateDir(l.openstack().getenv(), spec.Prefix)
	if err != nil {
		return err
	}
	prog := newProgress(l.Progress, l.ticker, l.openstack().now)
	f := &baseimage.Fetcher{Mirror: spec.BaseImageURL, CacheDir: BaseImageCacheDir(spec.CacheDir), Log: log, StateDir: state, Proxy: spec.HostProxy.ProxyFunc()}
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

// copyFile copies src to a new file dst (0600).
func copyFile(ctx context.Context, src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, ctxReader{ctx, in}); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
