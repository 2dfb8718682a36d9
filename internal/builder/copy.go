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
	"sync"

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

// copy downloads the snapshot once into a local temporary file (0600),
// checks it against the snapshot's size and checksums, then uploads it to
// every target cloud at once, each from its own handle on the file, and
// checks each copy's size and checksums once it is active.
func (b *osBuild) copy(ctx context.Context) error {
	targets := b.publishTargets()
	if len(targets) == 0 {
		return nil
	}
	res := &copyResult{done: map[string]publishedCopy{}}
	b.copies = res

	tmp, err := os.CreateTemp(b.o.getenv()("TMPDIR"), "grib-snapshot-*.img")
	if err != nil {
		return fmt.Errorf("creating a temporary file for the snapshot: %w", err)
	}
	res.tmp = tmp.Name()
	d, err := b.download(ctx, tmp)
	if cerr := tmp.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("writing %s: %w", res.tmp, cerr)
	}
	if err != nil {
		return err
	}

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(targets))
	for _, name := range targets {
		go func() {
			err := b.copyTo(cctx, name, res, d)
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

// download writes the snapshot's data to f and checks it.
func (b *osBuild) download(ctx context.Context, f *os.File) (Digests, error) {
	body, err := b.cloud.DownloadImage(ctx, b.snapshot.ID)
	if err != nil {
		return Digests{}, errs.Wrap(errs.KindPublish, err, "downloading snapshot %s", b.snapshot.ID)
	}
	defer body.Close()
	m5, s512 := md5.New(), sha512.New()
	// MD5 (Glance's checksum) runs beside SHA-512 and the file write rather
	// than after them: hashing, not the network, bounds a loopback download.
	w := &fanOut{serial: io.MultiWriter(f, s512), side: m5}
	n, err := io.CopyBuffer(w, ctxReader{ctx, body}, make([]byte, 1<<20))
	if err != nil {
		if ctx.Err() != nil {
			return Digests{}, fmt.Errorf("downloading snapshot %s: %w", b.snapshot.ID, ctx.Err())
		}
		return Digests{}, errs.Wrap(errs.KindPublish, err, "downloading snapshot %s", b.snapshot.ID)
	}
	// No fsync: the file is a scratch copy read back at once; a crash loses
	// nothing the snapshot in the build cloud does not still hold.
	d := Digests{Size: n, MD5: hexSum(m5), SHA512: hexSum(s512)}
	if err := d.matches(b.snapshot); err != nil {
		return Digests{}, errs.New(errs.KindPublish, "the download of snapshot %s does not match it: %v", b.snapshot.ID, err)
	}
	b.log.Info("snapshot downloaded", "id", b.snapshot.ID, "bytes", n, "md5", d.MD5)
	return d, nil
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

// copyTo makes one verified copy in cloud name.
func (b *osBuild) copyTo(ctx context.Context, name string, res *copyResult, d Digests) error {
	c, err := b.o.connector()(ctx, name, b.log)
	if err != nil {
		return fmt.Errorf("cloud %s: %w", name, err)
	}
	im, err := c.CreateImage(ctx, openstack.ImageSpec{
		Name: b.spec.ImageName, DiskFormat: b.snapshot.DiskFormat, ContainerFormat: b.snapshot.ContainerFormat,
		Properties: b.info.imageProperties(false),
	})
	if err != nil {
		return fmt.Errorf("cloud %s: %w", name, err)
	}
	res.mu.Lock()
	res.created = append(res.created, publishedCopy{cloud: c, image: *im})
	res.mu.Unlock()

	f, err := os.Open(res.tmp)
	if err != nil {
		return fmt.Errorf("cloud %s: %w", name, err)
	}
	defer f.Close()
	if err := c.UploadImage(ctx, im.ID, f); err != nil {
		return fmt.Errorf("cloud %s: uploading image %s: %w", name, im.ID, err)
	}
	active, err := c.WaitImageActive(ctx, im.ID)
	if err != nil {
		return fmt.Errorf("cloud %s: %w", name, err)
	}
	if err := d.matches(active); err != nil {
		return errs.New(errs.KindPublish, "cloud %s: the copy %s does not match the snapshot: %v", name, im.ID, err)
	}
	res.mu.Lock()
	res.done[name] = publishedCopy{cloud: c, image: *active}
	res.mu.Unlock()
	b.log.Info("image copied", "cloud", name, "id", im.ID, "bytes", active.SizeBytes, "md5", active.Checksum)
	return nil
}

// cleanupCopies removes the temporary file, and every copy when the build failed.
func (b *osBuild) cleanupCopies(ctx context.Context, failed bool) error {
	res := b.copies
	if res == nil {
		return nil
	}
	var errsList []error
	if res.tmp != "" {
		if err := os.Remove(res.tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
			errsList = append(errsList, err)
		}
	}
	if failed {
		res.mu.Lock()
		created := append([]publishedCopy(nil), res.created...)
		res.mu.Unlock()
		for _, c := range created {
			if err := c.cloud.DeleteImage(ctx, c.image.ID); err != nil {
				errsList = append(errsList, fmt.Errorf("cloud %s: %w", c.cloud.Name(), err))
				continue
			}
			b.log.Info("copy of the failed build deleted", "cloud", c.cloud.Name(), "id", c.image.ID)
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
