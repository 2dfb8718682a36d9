package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/manifest"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
	"github.com/runner-image-builder/github-runner-image-builder/internal/provision"
	"github.com/runner-image-builder/github-runner-image-builder/internal/statedir"
)

// OpenStack is the openstack builder: it boots a builder server from the
// base image that init uploaded, provisions it over SSH, snapshots it and
// publishes the snapshot (see Run). Its zero value works; it is safe for
// concurrent use (runs of different prefixes, bases or arches).
type OpenStack struct {
	// Connect opens clouds; nil means ConnectClouds of the request's
	// CloudsPaths (or, when it has none, of the openstack CLI's search path).
	Connect Connector
	// Getenv reads the environment (clouds.yaml search, state and cache
	// directories, TMPDIR); nil means os.Getenv.
	Getenv func(string) string
	// Version is the builder's version, recorded on every image.
	Version string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// CleanupTimeout bounds each cleanup (default 5 minutes).
	CleanupTimeout time.Duration
	// StopTimeout bounds the wait for the builder to be SHUTOFF (default 10 minutes).
	StopTimeout time.Duration
	// Output receives the script's output; nil logs it at info level.
	Output io.Writer
	// Auth, when set, lets the builds this OpenStack runs share their
	// authentications to a cloud (see openstack.AuthCache): the cells of a
	// matrix authenticate once per cloud. nil: every connection authenticates.
	Auth *openstack.AuthCache
	// Progress, when set (a terminal), receives the build's phases as
	// lines, each named by the image (cells may build at once), and the
	// copy's bytes and rate.
	Progress io.Writer

	// Test seams, set only by this package's tests and benchmarks.
	// withoutGuest leaves the guest steps out: the server's image has no OS
	// (the test Nova makes it ACTIVE at once and snapshots it as it is).
	withoutGuest bool
	// sshVia maps the builder's SSH address (host:port) to the one dialled,
	// to route SSH through a fault-injecting proxy.
	sshVia func(addr string) string
	// hostKeys makes each build's SSH host key (nil: a fresh ed25519 key),
	// so a test knows the key its guest got.
	hostKeys hostKeySource
}

// Timeouts of the steps that have no flag.
const (
	defaultStopTimeout = 10 * time.Minute
	prepareTimeout     = 5 * time.Minute
	publishTimeout     = 5 * time.Minute
	pruneTimeout       = 10 * time.Minute
)

func (o *OpenStack) getenv() func(string) string { return getenvOr(o.Getenv) }

// connector opens clouds from the clouds.yaml at paths (nil: the
// openstack CLI's search path) through proxy (zero: the environment's).
func (o *OpenStack) connector(paths []string, proxy config.HostProxy) (Connector, error) {
	if o.Connect != nil {
		return o.Connect, nil
	}
	if paths == nil {
		var err error
		if paths, err = openstack.CloudsPaths(o.getenv()); err != nil {
			return nil, err
		}
	}
	return ConnectClouds(paths, proxy, o.Auth), nil
}

// dial opens one cloud from the clouds.yaml at paths through proxy.
func (o *OpenStack) dial(ctx context.Context, cloud string, paths []string, proxy config.HostProxy, log *slog.Logger) (Cloud, error) {
	connect, err := o.connector(paths, proxy)
	if err != nil {
		return nil, err
	}
	return connect(ctx, cloud, log)
}

func (o *OpenStack) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// osBuild is one run: its inputs and what its steps produce.
type osBuild struct {
	o    *OpenStack
	log  *slog.Logger
	spec config.RunSpec
	job  Job
	info buildInfo
	pub  *publication // copy, publish, prune

	open      Connector
	cloud     Cloud
	key       statedir.Key    // read by "prepare"
	jump      *provision.Jump // --ssh-jump (SSHJump), read by "prepare"; nil: direct
	hostKey   provision.BuildHostKey
	userData  []byte // the job's, with hostKey: made by "prepare"
	flavor    *openstack.Flavor
	network   *openstack.Network
	baseImage *openstack.Image
	serverID  string
	server    *openstack.Server
	snapshot  *openstack.Image

	prog        *progress     // phase lines on a terminal (nil: none)
	sess        *GuestSession // the guest steps' SSH session
	interrupted func() bool   // the build's context is done (Ctrl-C, SIGTERM)
	kept        bool          // deleteServer left the server (KeepOnFailure)
}

// Build builds the job's image in its Spec.Cloud and publishes it to
// Spec.PublishClouds(). It returns one image per publish cloud. The steps
// (see steps) run in order; on failure, Ctrl-C or SIGTERM their cleanups
// run in reverse: nothing is left in any cloud and nothing is published.
// Once published, the images stay: when pruning or a cleanup fails after
// that (errs.KindPartial), or a signal interrupts pruning
// (errs.KindInterrupted), Build returns them with the error.
func (o *OpenStack) Build(ctx context.Context, log *slog.Logger, job Job) ([]config.PublishedImage, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	spec := job.Spec
	if spec.Builder != config.BuilderOpenStack {
		return nil, errs.New(errs.KindInternal, "the openstack builder was given a %s build", spec.Builder)
	}
	connect, err := o.connector(spec.CloudsPaths, spec.HostProxy)
	if err != nil {
		return nil, err
	}
	b := o.newBuild(log, job, connect)
	b.log.Info("openstack build", "image", spec.ImageName, "cloud", spec.Cloud,
		"builder_server", config.BuilderName(spec.Prefix, spec.Base, spec.Arch))
	b.interrupted = func() bool { return ctx.Err() != nil }
	r := &Runner{Log: b.log, CleanupTimeout: o.CleanupTimeout, Observe: Observers(b.prog.observe, job.Observe)}
	err = r.Run(ctx, b.steps())
	if b.kept && err != nil {
		err = b.keptBuilder(err)
	}
	return b.pub.result(ctx, err)
}

// newBuild is one build of job, connecting to clouds with connect.
func (o *OpenStack) newBuild(log *slog.Logger, job Job, connect Connector) *osBuild {
	spec := job.Spec
	b := &osBuild{o: o, spec: spec, job: job, open: connect, sess: &GuestSession{}, interrupted: func() bool { return false }}
	b.info = newBuildInfo(spec, job.Runner, o.now(), o.Version)
	b.log = log.With("build_id", b.info.ID)
	b.pub = &publication{connect: connect, log: b.log, spec: spec, info: b.info, observe: job.Observe,
		stateDir: func() (string, error) { return config.StateDir(o.getenv(), spec.Prefix) }}
	if b.prog = newProgress(o.Progress, nil, o.now); b.prog != nil {
		b.prog.name = spec.ImageName
	}
	return b
}

// steps is the whole build, in order, in one place.
func (b *osBuild) steps() []Step {
	spec := b.spec
	steps := []Step{
		{Name: "connect", Timeout: prepareTimeout, Run: b.connect},
		{Name: "lock", Run: nil, Cleanup: nil}, // filled below
		{Name: "prepare", Timeout: prepareTimeout, Run: b.prepare},
		{Name: "keypair", Timeout: prepareTimeout, Run: b.ensureKeypair},
		{Name: "security group", Timeout: prepareTimeout, Run: b.ensureSecurityGroup},
		{Name: "flavor and network", Timeout: prepareTimeout, Run: b.selectFlavorNetwork},
		{Name: "base image", Timeout: prepareTimeout, Run: b.findBaseImage},
		{Name: "server", Timeout: spec.Timeouts.Boot, TimeoutFlag: "--boot-timeout", Run: b.createServer, Cleanup: b.deleteServer},
	}
	unlock := func() {}
	steps[1].Run = func(context.Context) error {
		u, err := b.lock()
		if err == nil {
			unlock = u
		}
		return err
	}
	steps[1].Cleanup = func(context.Context, bool) error { unlock(); return nil }

	guest := jobGuestConfig(b.job, b.log, b.o.Output)
	guest.Address, guest.Console = b.sshAddress, b.console
	guest.Manifest = func() manifest.Manifest {
		return newManifest(b.job, b.info, manifest.BaseImage{SHA256: b.baseImage.Properties[PropBaseSHA256], ID: b.baseImage.ID})
	}
	guest.KeepManifest = func(data []byte) { b.pub.manifest = data }
	if !b.o.withoutGuest {
		steps = append(steps, guestSteps(guest, b.withKey, b.sess)...)
	}

	stop := b.o.StopTimeout
	if stop <= 0 {
		stop = defaultStopTimeout
	}
	steps = append(steps,
		Step{Name: "stop", Timeout: stop, Run: b.stopServer},
		Step{Name: "snapshot", Timeout: spec.Timeouts.Snapshot, TimeoutFlag: "--snapshot-timeout", Run: b.createSnapshot, Cleanup: b.deleteSnapshot},
	)
	return append(steps, b.pub.publishSteps("copy", b.copy)...)
}

// withKey completes the guest configuration with the keys "prepare" made.
func (b *osBuild) withKey(c GuestConfig) GuestConfig {
	c.Signer, c.Jump = b.key.Signer, b.jump
	c.HostKey = b.hostKey.PublicKey()
	return c
}

func (b *osBuild) connect(ctx context.Context) error {
	c, err := b.open(ctx, b.spec.Cloud, b.log)
	if err != nil {
		return err
	}
	b.cloud = c
	return nil
}

// lock keeps two runs on this host from building the same builder name at
// once (exit code 9 for the second).
func (b *osBuild) lock() (func(), error) {
	dir, err := config.StateDir(b.o.getenv(), b.spec.Prefix)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, fmt.Sprintf("build-%s-%s.lock", b.spec.Base, b.spec.Arch))
	unlock, err := statedir.TryLock(path)
	if err != nil {
		return nil, fmt.Errorf("another build of %s is running on this host: %w",
			config.BuilderName(b.spec.Prefix, b.spec.Base, b.spec.Arch), err)
	}
	return unlock, nil
}

// prepare reads the prefix's SSH key (made on first use) and generates the
// guest's host key into its user-data, before any server exists.
func (b *osBuild) prepare(ctx context.Context) error {
	var err error
	if b.key, err = prefixKey(ctx, b.o.getenv(), b.spec.Prefix); err != nil {
		return err
	}
	if b.jump, err = SSHJump(b.spec.SSHJump, b.o.getenv(), b.log); err != nil {
		return err
	}
	if b.hostKey, b.userData, err = guestHostKey(b.o.hostKeys, b.job.UserData, b.log); err != nil {
		return err
	}
	if !openstack.UserDataFits(b.userData) {
		return errs.Usage("the user-data is %d bytes with the build's SSH host key part (%d without); Nova takes at most %d bytes "+
			"before base64: shorten --user-data", len(b.userData), len(b.job.UserData), 65535/4*3)
	}
	return nil
}

func (b *osBuild) ensureKeypair(ctx context.Context) error {
	return cloudStepError(ensureKeypair(ctx, b.cloud, config.KeypairName(b.spec.Prefix), b.key, b.log))
}

// cloudStepError gives a failed call of a step before or around the server
// (keypair, security group, flavor and network, base image, stop) a kind:
// its own (unreachable, auth, not found...), else a build failure (exit 6),
// not the unclassified exit 1 of a bug. The step's name is added by Runner.
func cloudStepError(err error) error {
	if err == nil || errs.KindOf(err) != errs.KindInternal {
		return err
	}
	return &errs.Error{Kind: errs.KindBuild, Err: err}
}

// ensureKeypair makes the Nova keypair name hold key's public key: imported
// when missing, replaced when it holds another key (the Python tool's
// self-healing). A concurrent import of the same key is fine.
func ensureKeypair(ctx context.Context, c openstack.Keypairs, name string, key statedir.Key, log *slog.Logger) error {
	want := publicKeyBlob(key.AuthorizedKey)
	for attempt := 1; ; attempt++ {
		kp, err := c.GetKeypair(ctx, name)
		switch {
		case err == nil && publicKeyBlob(kp.PublicKey) == want:
			return nil
		case err == nil:
			log.Warn("keypair holds another key; replacing it with this host's", "keypair", name)
			if err := c.DeleteKeypair(ctx, name); err != nil {
				return err
			}
		case !errs.Is(err, errs.KindNotFound):
			return err
		}
		_, err = c.ImportKeypair(ctx, name, key.AuthorizedKey)
		if err == nil {
			return nil
		}
		if !openstack.IsConflict(err) || attempt == 3 {
			return err
		}
		// A concurrent run imported it first: check what it holds.
	}
}

// publicKeyBlob is the "type base64" part of an authorized_keys line.
func publicKeyBlob(line string) string {
	f := strings.Fields(line)
	if len(f) < 2 {
		return strings.TrimSpace(line)
	}
	return f[0] + " " + f[1]
}

func (b *osBuild) ensureSecurityGroup(ctx context.Context) error {
	_, err := b.cloud.EnsureSecurityGroup(ctx, config.SecurityGroupName(b.spec.Prefix), securityGroupDescription)
	return cloudStepError(err)
}

const securityGroupDescription = "For builders managed by the github-runner-image-builder."

func (b *osBuild) selectFlavorNetwork(ctx context.Context) error {
	var err error
	if b.flavor, err = b.cloud.SelectFlavor(ctx, b.spec.Flavor); err != nil {
		return cloudStepError(err)
	}
	if b.network, err = b.cloud.SelectNetwork(ctx, b.spec.Network); err != nil {
		return cloudStepError(err)
	}
	b.log.Info("flavor and network", "flavor", b.flavor.Name, "network", b.network.Name)
	return nil
}

func (b *osBuild) findBaseImage(ctx context.Context) error {
	name := config.BaseImageName(b.spec.Prefix, b.spec.Base, b.spec.Arch)
	ims, err := b.cloud.ListImagesByName(ctx, name, true)
	if err != nil {
		return cloudStepError(err)
	}
	im, refused := PickBaseImage(ims, b.cloud.ProjectID(), b.spec.Prefix)
	for _, r := range refused {
		b.log.Warn("not booting an image that init did not upload", "image", name, "id", r.Image.ID,
			"owner", r.Image.Owner, "visibility", r.Image.Visibility, "why", r.Why)
	}
	if im == nil {
		if len(refused) > 0 {
			r := refused[0]
			return errs.New(errs.KindNotFound, "base image %s: refusing image %s (owner %s, %s): %s; only the image init uploaded "+
				"to the build project %s is booted: run init --arch %s --prefix %q in cloud %s",
				name, r.Image.ID, r.Image.Owner, r.Image.Visibility, r.Why, b.cloud.ProjectID(), b.spec.Arch, b.spec.Prefix, b.spec.Cloud)
		}
		return errs.New(errs.KindNotFound, "base image %s is not in cloud %s (or not active): run init --arch %s --prefix %q first",
			name, b.spec.Cloud, b.spec.Arch, b.spec.Prefix)
	}
	b.baseImage = im
	b.log.Info("base image", "image", name, "id", im.ID, "sha256", im.Properties[PropBaseSHA256])
	return nil
}

// RefusedImage is an image of the base image's name that a build will not
// boot, and why.
type RefusedImage struct {
	Image openstack.Image
	Why   string
}

// PickBaseImage chooses, among the active images of a base image's name
// (newest first), the newest one init uploaded: owned by the build project,
// marked with the prefix and carrying the SHA-256 of the verified file init
// uploaded it from. Every other image is refused: a public, shared or
// community image of the same name from another project, or one of the
// project's own uploaded by hand, would receive the script, its secrets and
// the builder key.
func PickBaseImage(ims []openstack.Image, project, prefix string) (*openstack.Image, []RefusedImage) {
	var pick *openstack.Image
	var refused []RefusedImage
	for i := range ims {
		im := &ims[i]
		why := ""
		switch {
		case project == "" || im.Owner != project:
			why = fmt.Sprintf("owned by project %q, not the build project %q", im.Owner, project)
		case im.Properties[PropPrefix] != prefix:
			why = fmt.Sprintf("its %s is %q, not %q: not uploaded by init", PropPrefix, im.Properties[PropPrefix], prefix)
		case !isSHA256Hex(im.Properties[PropBaseSHA256]):
			why = fmt.Sprintf("no SHA-256 of a verified file in %s: not uploaded by init", PropBaseSHA256)
		case pick == nil:
			pick = im
		}
		if why != "" {
			refused = append(refused, RefusedImage{Image: *im, Why: why})
		}
	}
	return pick, refused
}

// isSHA256Hex reports whether s is a SHA-256 in lowercase hex, as init
// records it.
func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func (b *osBuild) builderName() string {
	return config.BuilderName(b.spec.Prefix, b.spec.Base, b.spec.Arch)
}

func (b *osBuild) createServer(ctx context.Context) error {
	name := b.builderName()
	if others, err := b.cloud.ListServers(ctx, name); err == nil {
		for _, s := range others {
			if s.Name == name {
				b.log.Warn("another server has the builder's name (a crashed run, or a run elsewhere); `sweep` removes old ones",
					"server", name, "id", s.ID, "created", s.Created)
			}
		}
	}
	spec := openstack.ServerSpec{
		Name: name, ImageID: b.baseImage.ID, FlavorID: b.flavor.ID, NetworkID: b.network.ID,
		KeyName: config.KeypairName(b.spec.Prefix), SecurityGroup: config.SecurityGroupName(b.spec.Prefix),
		UserData: b.userData, ConfigDrive: true,
		Metadata: map[string]string{PropBuildID: b.info.ID, PropPrefix: b.spec.Prefix},
	}
	id, err := createAdopting(ctx, b.log, "builder server "+name,
		func(ctx context.Context) (string, error) {
			s, err := b.cloud.CreateServer(ctx, spec)
			if s != nil {
				return s.ID, err
			}
			return "", err
		},
		func(ctx context.Context) (string, error) { return firstOf(b.serversOfBuild(ctx)) })
	if id != "" {
		b.serverID = id
		b.job.Observe.Emit(Event{Kind: Made, What: b.serverLeft(id)})
	}
	if err != nil {
		return errs.Wrap(buildKind(err), err, "creating builder server %s", name)
	}
	b.log.Info("builder server created", "server", name, "id", id)
	active, err := b.cloud.WaitServer(ctx, id, openstack.StatusActive)
	if err != nil {
		return err
	}
	b.server = active
	return nil
}

// buildKind is the kind of a failed call to the build cloud: its own when
// it has one (auth, not found, unreachable...), else a build failure.
func buildKind(err error) errs.Kind {
	if k := errs.KindOf(err); k != errs.KindInternal {
		return k
	}
	return errs.KindBuild
}

func (b *osBuild) serverLeft(id string) Left {
	return Left{Kind: "server", Where: b.spec.Cloud, Name: b.builderName(), ID: id}
}

// serversOfBuild lists the servers with the builder's name and this
// build's ID.
func (b *osBuild) serversOfBuild(ctx context.Context) ([]string, error) {
	found, err := b.cloud.ListServers(ctx, b.builderName())
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, s := range found {
		if s.Name == b.builderName() && s.Metadata[PropBuildID] == b.info.ID {
			ids = append(ids, s.ID)
		}
	}
	return ids, nil
}

// deleteServer removes the builder, on success as on failure: the server
// it knows and any other of this build (a create whose reply was lost).
func (b *osBuild) deleteServer(ctx context.Context, failed bool) error {
	if b.cloud == nil {
		return nil
	}
	if failed && b.spec.KeepOnFailure && b.serverID != "" && !b.interrupted() {
		b.kept = true
		b.log.Warn(keepLog(b.serverID), "name", b.builderName())
		return nil
	}
	ids, err := b.serversOfBuild(ctx)
	if err != nil && b.serverID == "" {
		return err
	}
	if b.serverID != "" && !slices.Contains(ids, b.serverID) {
		ids = append(ids, b.serverID)
	}
	for _, id := range ids {
		if err := b.cloud.DeleteServer(ctx, id); err != nil {
			return err
		}
		b.job.Observe.Emit(Event{Kind: Removed, What: b.serverLeft(id)})
		b.log.Info("builder server deleted", "id", id)
	}
	return nil
}

func (b *osBuild) sshAddress(ctx context.Context) (string, error) {
	s := b.server
	if s == nil {
		return "", errs.New(errs.KindInternal, "no builder server")
	}
	addr, err := openstack.FixedAddress(s, b.network.Name)
	if err != nil {
		// Fall back to any network: the port may be on the network by ID.
		if addr, err = openstack.FixedAddress(s, ""); err != nil {
			return "", errs.Wrap(errs.KindBuild, err, "builder server %s has no address to SSH to", s.ID)
		}
	}
	hostPort := net.JoinHostPort(addr.String(), "22")
	if b.o.sshVia != nil {
		hostPort = b.o.sshVia(hostPort)
	}
	return hostPort, nil
}

func (b *osBuild) console(ctx context.Context) (string, error) {
	if b.serverID == "" {
		return "", errors.New("no builder server")
	}
	out, err := b.cloud.ConsoleOutput(ctx, b.serverID, 0)
	if openstack.StatusCode(err) == http.StatusForbidden {
		return "", fmt.Errorf("%w (HTTP 403 for server %s): %w", ErrConsoleForbidden, b.serverID, err)
	}
	return out, err
}

func (b *osBuild) stopServer(ctx context.Context) error {
	return cloudStepError(b.cloud.StopServer(ctx, b.serverID))
}

func (b *osBuild) createSnapshot(ctx context.Context) error {
	props := b.pub.imageProperties(false)
	id, err := createAdopting(ctx, b.log, "snapshot "+b.spec.ImageName,
		func(ctx context.Context) (string, error) {
			return b.cloud.CreateSnapshot(ctx, b.serverID, b.spec.ImageName, props)
		},
		func(ctx context.Context) (string, error) {
			return firstOf(imagesOfBuild(ctx, b.cloud, b.spec.ImageName, b.info.ID))
		})
	if id != "" {
		b.snapshot = &openstack.Image{ID: id, Name: b.spec.ImageName}
		b.job.Observe.Emit(Event{Kind: Made, What: b.pub.imageLeft(b.spec.Cloud, id)})
	}
	if err != nil {
		return errs.Wrap(errs.KindPublish, err, "snapshotting the builder")
	}
	im, err := b.cloud.WaitImageActive(ctx, id)
	if err != nil {
		if errs.KindOf(err) == errs.KindInternal {
			err = errs.Wrap(errs.KindPublish, err, "waiting for snapshot %s", id)
		}
		return err
	}
	if im.SizeBytes <= 0 || im.Checksum == "" {
		return errs.New(errs.KindPublish, "snapshot %s is active but reports size %d and checksum %q", id, im.SizeBytes, im.Checksum)
	}
	b.snapshot = im
	b.pub.home = &publishedCopy{cloud: b.cloud, image: *im}
	b.pub.format = *im
	b.log.Info("snapshot active", "image", im.Name, "id", im.ID, "bytes", im.SizeBytes, "disk_format", im.DiskFormat)
	return nil
}

// deleteSnapshot removes the snapshot when the build failed (it is the
// published image otherwise): the one it knows and any other image of
// this build in the build cloud (a snapshot whose create reply was lost).
func (b *osBuild) deleteSnapshot(ctx context.Context, failed bool) error {
	if !failed || b.cloud == nil {
		return nil
	}
	ids, err := imagesOfBuild(ctx, b.cloud, b.spec.ImageName, b.info.ID)
	if err != nil && b.snapshot == nil {
		return err
	}
	if b.snapshot != nil && !slices.Contains(ids, b.snapshot.ID) {
		ids = append(ids, b.snapshot.ID)
	}
	for _, id := range ids {
		if err := b.cloud.DeleteImage(ctx, id); err != nil {
			return err
		}
		b.job.Observe.Emit(Event{Kind: Removed, What: b.pub.imageLeft(b.spec.Cloud, id)})
		b.log.Info("snapshot of the failed build deleted", "id", id)
	}
	return nil
}

// copy downloads the snapshot once into a local temporary file (0600, a
// spool) and uploads it to every target cloud at once while the download
// is still writing it, then checks each copy's size and checksums once it is
// active. The download is checked against the snapshot before the spool is
// finished: until then an upload cannot reach the end of its data, so Glance
// can only complete a copy with data that was verified.
func (b *osBuild) copy(ctx context.Context) error {
	if len(b.pub.targets()) == 0 {
		return nil
	}
	res := &copyResult{done: map[string]publishedCopy{}}
	b.pub.copies = res
	dir := scratchDir(b.spec, b.o.getenv())
	sp, err := newSpool(dir)
	if err != nil {
		return errs.Wrap(errs.KindPublish, err, "creating a temporary file for the snapshot (--scratch-dir)")
	}
	res.tmp = sp.Name() // removed by cleanupCopies
	b.job.Observe.Emit(Event{Kind: Made, What: Left{Kind: "file", Name: res.tmp}})
	defer sp.Close()
	var total int64 // the uploads of the snapshot itself: converted ones are not metered
	if b.snapshot != nil {
		total = b.snapshot.SizeBytes * int64(b.pub.uploadsOf(b.snapshot.DiskFormat))
	}
	m := b.prog.current().meter(total)
	conv := &converter{path: sp.Name(), format: b.snapshot.DiskFormat, dir: dir, getenv: b.o.getenv()}
	return b.pub.copyAll(ctx, res, func(ctx context.Context) io.ReadSeeker { return m.reader(sp.reader(ctx)) },
		func(ctx context.Context) error {
			d, err := b.download(ctx, sp)
			if err == nil {
				res.setWant(d) // before the end is readable: see copyAll
			}
			sp.finish(err) // only now may an upload read to the end
			return err
		}, conv)
}

// scratchDir is where a build writes its scratch files: --scratch-dir,
// else $TMPDIR ("" lets os.CreateTemp pick).
func scratchDir(spec config.RunSpec, getenv func(string) string) string {
	if spec.ScratchDir != "" {
		return spec.ScratchDir
	}
	return getenv("TMPDIR")
}
