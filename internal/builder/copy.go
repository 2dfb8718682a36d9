package builder

import (
	"context"
	"crypto/md5"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"slices"
	"sync"

	"github.com/runner-image-builder/github-runner-image-builder/internal/clock"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
)

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
	want    *Digests // the download's, once checked against the snapshot
	tmp     string
}

// Digests of a file: what Glance reports for an image's data.
type Digests struct {
	Size   int64
	MD5    string // Glance's checksum
	SHA512 string // Glance's os_hash_value when os_hash_algo is sha512
}

// matches checks an image's size and checksums against d; what is not
// reported (an older Glance has no os_hash_value) is not compared.
func (d Digests) matches(im *openstack.Image) error {
	switch {
	case im.SizeBytes != d.Size:
		return fmt.Errorf("size %d, want %d", im.SizeBytes, d.Size)
	case im.Checksum != "" && im.Checksum != d.MD5:
		return fmt.Errorf("checksum %s, want %s", im.Checksum, d.MD5)
	case im.HashAlgo == "sha512" && im.HashValue != "" && im.HashValue != d.SHA512:
		return fmt.Errorf("os_hash_value %s…, want %s…", short(im.HashValue), short(d.SHA512))
	case im.Checksum == "" && (im.HashAlgo != "sha512" || im.HashValue == ""):
		return errors.New("Glance reports no checksum to compare")
	}
	return nil
}

func short(s string) string { return s[:min(len(s), 16)] }

// copy downloads the snapshot once into a local temporary file (0600, a
// spool) and uploads it to every target cloud at once while the download
// is still writing it, then checks each copy's size and checksums once it is
// active. The download is checked against the snapshot before the spool is
// finished: until then an upload cannot reach the end of its data, so Glance
// can only complete a copy with data that was verified.
func (b *osBuild) copy(ctx context.Context) error {
	targets := b.publishTargets()
	if len(targets) == 0 {
		return nil
	}
	res := &copyResult{done: map[string]publishedCopy{}}
	b.copies = res

	sp, err := newSpool(b.o.getenv()("TMPDIR"))
	if err != nil {
		return fmt.Errorf("creating a temporary file for the snapshot: %w", err)
	}
	res.tmp = sp.Name() // removed by cleanupCopies
	b.o.Ledger.add(Left{Kind: "file", Name: res.tmp})
	defer sp.Close()

	cctx, cancel := context.WithCancel(ctx)
	defer cancel() // runs before sp.Close: wakes any reader still waiting
	dlErr := make(chan error, 1)
	go func() {
		d, err := b.download(cctx, sp)
		if err != nil {
			cancel() // the uploads cannot succeed: stop them
		} else {
			res.mu.Lock()
			res.want = &d
			res.mu.Unlock()
		}
		sp.finish(err) // only now may an upload read to the end
		dlErr <- err
	}()
	errc := make(chan error, len(targets))
	src := func(ctx context.Context) io.ReadSeeker { return sp.reader(ctx) }
	for _, name := range targets {
		go func() {
			err := b.copyTo(cctx, name, res, src)
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
		default:
			failed = append(failed, err)
		}
	}
	if err := <-dlErr; err != nil && (ctx.Err() != nil || !errors.Is(err, context.Canceled)) {
		return err // the uploads failed because of it
	}
	if len(failed) == 0 && len(cancelled) > 0 {
		failed = cancelled
	}
	if len(failed) > 0 {
		if ctx.Err() != nil {
			return errors.Join(failed...)
		}
		return errs.Wrap(errs.KindPublish, errors.Join(failed...), "copying %s to %v", b.spec.ImageName, targets)
	}
	return nil
}

// download appends the snapshot's data to sp, hashing it on the way, and
// checks it against the snapshot. A download cut or refused by a transient
// fault starts again (at most transferAttempts times). The snapshot does not
// change, so a new attempt skips the bytes sp already holds (readers past
// them stay valid) and the hashes, which have seen exactly those bytes, go
// on: the check covers every byte the uploads read, once.
func (b *osBuild) download(ctx context.Context, sp *spool) (Digests, error) {
	m5, s512 := md5.New(), sha512.New()
	// MD5 (Glance's checksum) runs beside SHA-512 and the file write rather
	// than after them: hashing, not the network, bounds a loopback download.
	// No fsync: the file is a scratch copy; a crash loses nothing the
	// snapshot in the build cloud does not still hold.
	w := &fanOut{serial: io.MultiWriter(sp, s512), side: m5}
	for attempt := 1; ; attempt++ {
		err := b.downloadOnce(ctx, w, sp.Len())
		if err == nil {
			break
		}
		if ctx.Err() != nil || !openstack.IsTransient(err) || attempt == transferAttempts {
			return Digests{}, err
		}
		b.log.Warn("downloading the snapshot failed; starting again", "id", b.snapshot.ID, "attempt", attempt,
			"held", sp.Len(), "error", err)
		if err := clock.Sleep(ctx, retryPause); err != nil {
			return Digests{}, fmt.Errorf("downloading snapshot %s: %w", b.snapshot.ID, err)
		}
	}
	d := Digests{Size: sp.Len(), MD5: hexSum(m5), SHA512: hexSum(s512)}
	if err := d.matches(b.snapshot); err != nil {
		return Digests{}, errs.New(errs.KindPublish, "the download of snapshot %s does not match it: %v", b.snapshot.ID, err)
	}
	b.log.Info("snapshot downloaded", "id", b.snapshot.ID, "bytes", d.Size, "md5", d.MD5)
	return d, nil
}

// downloadOnce streams the snapshot's data into w, less its first skip
// bytes (which an earlier attempt wrote).
func (b *osBuild) downloadOnce(ctx context.Context, w io.Writer, skip int64) error {
	body, err := b.cloud.DownloadImage(ctx, b.snapshot.ID)
	if err != nil {
		return errs.Wrap(errs.KindPublish, err, "downloading snapshot %s", b.snapshot.ID)
	}
	defer body.Close()
	r := ctxReader{ctx, body}
	n, err := io.CopyN(io.Discard, r, skip)
	if err == io.EOF { // io.CopyN's own: a clean end, not a cut
		return errs.New(errs.KindPublish, "downloading snapshot %s again: it ends after %d bytes, an earlier attempt got %d",
			b.snapshot.ID, n, skip)
	}
	if err == nil {
		_, err = io.CopyBuffer(w, r, make([]byte, 1<<20))
	}
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("downloading snapshot %s: %w", b.snapshot.ID, ctx.Err())
	}
	return errs.Wrap(errs.KindPublish, err, "downloading snapshot %s", b.snapshot.ID)
}

// fanOut writes each buffer to serial and, concurrently, to side (a hash,
// which never fails), returning when both have it.
type fanOut struct {
	serial io.Writer
	side   io.Writer
}

func (w *fanOut) Write(p []byte) (int, error) {
	done := make(chan struct{})
	go func() {
		_, _ = w.side.Write(p)
		close(done)
	}()
	n, err := w.serial.Write(p)
	<-done
	return n, err
}

func hexSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

// copyTo makes one verified copy in cloud name, uploading the data src
// gives (from its start, for each attempt; reads wait at most until the
// context given ends) and checking the copy against res.want, which must be
// set by the time the data has been read to its end. An upload that fails
// on a transient fault is sent again (at most transferAttempts times) into
// the same image while Glance still has it queued, else into a new one.
func (b *osBuild) copyTo(ctx context.Context, name string, res *copyResult, src func(context.Context) io.ReadSeeker) error {
	c, err := b.o.connector()(ctx, name, b.log)
	if err != nil {
		return fmt.Errorf("cloud %s: %w", name, err)
	}
	res.mu.Lock()
	res.clouds = append(res.clouds, c)
	res.mu.Unlock()

	var id string
	for attempt := 1; ; attempt++ {
		if id == "" {
			if id, err = b.createCopy(ctx, c, res); err != nil {
				return fmt.Errorf("cloud %s: %w", name, err)
			}
		}
		err = c.UploadImage(ctx, id, src(ctx))
		if err == nil {
			break
		}
		if ctx.Err() != nil || !openstack.IsTransient(err) || attempt == transferAttempts {
			return fmt.Errorf("cloud %s: uploading image %s: %w", name, id, err)
		}
		b.log.Warn("uploading the copy failed; sending it again", "cloud", name, "id", id, "attempt", attempt, "error", err)
		if err := clock.Sleep(ctx, retryPause); err != nil {
			return fmt.Errorf("cloud %s: uploading image %s: %w", name, id, err)
		}
		if im, gerr := c.GetImage(ctx, id); gerr != nil || im.Status != openstack.ImageQueued {
			// Glance keeps an image whose upload broke off as queued; one in
			// any other state takes no second upload: start a new one.
			if derr := c.DeleteImage(ctx, id); derr != nil {
				return fmt.Errorf("cloud %s: uploading image %s: %w (deleting it to start again failed: %v)", name, id, err, derr)
			}
			b.o.Ledger.remove(b.imageLeft(name, id))
			id = ""
		}
	}
	res.mu.Lock()
	want := res.want
	res.mu.Unlock()
	if want == nil { // an upload that did not read to the end of the spool
		return errs.New(errs.KindPublish, "cloud %s: the upload of image %s ended before the download was checked", name, id)
	}
	active, err := c.WaitImageActive(ctx, id)
	if err != nil {
		return fmt.Errorf("cloud %s: %w", name, err)
	}
	if err := want.matches(active); err != nil {
		return errs.New(errs.KindPublish, "cloud %s: the copy %s does not match the snapshot: %v", name, id, err)
	}
	res.mu.Lock()
	res.done[name] = publishedCopy{cloud: c, image: *active}
	res.mu.Unlock()
	b.log.Info("image copied", "cloud", name, "id", id, "bytes", active.SizeBytes, "md5", active.Checksum)
	return nil
}

// createCopy creates the copy's image record (not yet published).
func (b *osBuild) createCopy(ctx context.Context, c Cloud, res *copyResult) (string, error) {
	spec := openstack.ImageSpec{
		Name: b.spec.ImageName, DiskFormat: b.snapshot.DiskFormat, ContainerFormat: b.snapshot.ContainerFormat,
		Properties: b.info.imageProperties(false),
	}
	id, err := createAdopting(ctx, b.log, "image "+b.spec.ImageName+" in cloud "+c.Name(),
		func(ctx context.Context) (string, error) {
			im, err := c.CreateImage(ctx, spec)
			if err != nil {
				return "", err
			}
			return im.ID, nil
		},
		func(ctx context.Context) (string, error) {
			return firstOf(imagesOfBuild(ctx, c, b.spec.ImageName, b.info.ID))
		})
	if id != "" {
		res.mu.Lock()
		res.created = append(res.created, publishedCopy{cloud: c, image: openstack.Image{ID: id, Name: b.spec.ImageName}})
		res.mu.Unlock()
		b.o.Ledger.add(b.imageLeft(c.Name(), id))
	}
	return id, err
}

// cleanupCopies removes the temporary file and, when the build failed,
// every image of this build in the upload clouds: those it created and any
// other (a create whose reply was lost).
func (b *osBuild) cleanupCopies(ctx context.Context, failed bool) error {
	res := b.copies
	if res == nil {
		return nil
	}
	var errsList []error
	if res.tmp != "" {
		if err := os.Remove(res.tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
			errsList = append(errsList, err)
		} else {
			b.o.Ledger.remove(Left{Kind: "file", Name: res.tmp})
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
		ids, err := imagesOfBuild(ctx, c, b.spec.ImageName, b.info.ID)
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
			b.o.Ledger.remove(b.imageLeft(c.Name(), id))
			b.log.Info("copy of the failed build deleted", "cloud", c.Name(), "id", id)
		}
	}
	return errors.Join(errsList...)
}

// ctxReader ends a read loop when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
