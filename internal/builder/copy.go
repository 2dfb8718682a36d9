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

	"github.com/runner-image-builder/github-runner-image-builder/internal/clock"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
)

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
