package builder

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
)

// qcow2Of writes raw into a qcow2 image with qemu-img and returns its bytes.
func qcow2Of(t *testing.T, raw []byte) []byte {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img is not installed")
	}
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.raw"), filepath.Join(dir, "out.qcow2")
	if err := os.WriteFile(in, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", in, out).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, b)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// Clouds that want raw get the qcow2 snapshot converted, once for all of
// them, into --scratch-dir; the others get the snapshot's bytes. Each
// copy is checked against its own data's digests, the published result
// names each copy's format and checksum, and no scratch file is left.
func TestCopyConvertsOncePerFormat(t *testing.T) {
	raw := make([]byte, 2<<20)
	for i := range raw {
		raw[i] = byte(i*13 + i>>9)
	}
	qcow := qcow2Of(t, raw)
	b, clouds := publishFixture(t, "east", "west", "north")
	scratch := t.TempDir()
	b.spec.UploadDiskFormats = map[string]config.DiskFormat{"east": config.DiskFormatRaw, "north": config.DiskFormatRaw}
	b.spec.ScratchDir = scratch
	var logs bytes.Buffer
	b.log = slog.New(slog.NewTextHandler(&logs, nil))
	b.snapshot = clouds["build"].store(b.spec.ImageName, "qcow2", b.info.imageProperties(false), qcow)
	attachPublication(b)
	ctx := context.Background()
	for _, step := range []func(context.Context) error{b.copy, b.pub.publish} {
		if err := step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), "image converted"); n != 1 {
		t.Errorf("%d conversions, want 1 (one per format)", n)
	}
	want := map[string]struct {
		format string
		data   []byte
	}{"east": {"raw", raw}, "west": {"qcow2", qcow}, "north": {"raw", raw}}
	for _, p := range b.pub.published {
		w, c := want[p.Cloud], clouds[p.Cloud]
		im, err := c.GetImage(ctx, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		sum := md5.Sum(w.data)
		if !bytes.Equal(c.data[p.ID], w.data) || im.DiskFormat != w.format || p.DiskFormat != w.format ||
			p.Checksum != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: %d bytes, format %s (published %s), checksum %s; want %d bytes of %s, checksum %x",
				p.Cloud, len(c.data[p.ID]), im.DiskFormat, p.DiskFormat, p.Checksum, len(w.data), w.format, sum)
		}
	}
	if err := b.pub.cleanupCopies(ctx, false); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(scratch); len(left) != 0 {
		t.Errorf("scratch files left in --scratch-dir: %v", left)
	}
}

// A copy whose converted data does not arrive intact fails the copy step
// (exit 8), and the cleanup removes the copies and every scratch file.
func TestCopyConvertedMismatch(t *testing.T) {
	qcow := qcow2Of(t, bytes.Repeat([]byte("grib"), 1<<18))
	b, clouds := publishFixture(t, "east", "west")
	scratch := t.TempDir()
	b.spec.DiskFormat = config.DiskFormatRaw
	b.spec.ScratchDir = scratch
	b.snapshot = clouds["build"].store(b.spec.ImageName, "qcow2", b.info.imageProperties(false), qcow)
	attachPublication(b)
	clouds["west"].corruptCopy = true
	ctx := context.Background()
	err := b.copy(ctx)
	if err == nil || !strings.Contains(err.Error(), "cloud west: the copy") || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("err = %v, want west's copy refused", err)
	}
	cleanupFailedCopy(t, ctx, b, clouds)
	if left, _ := os.ReadDir(scratch); len(left) != 0 {
		t.Errorf("scratch files left in --scratch-dir: %v", left)
	}
}
