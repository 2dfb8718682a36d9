package builder

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/openstack"
)

// streamFixture is a build with a 1 MiB snapshot of varied bytes, to copy
// to the clouds named.
func streamFixture(t *testing.T, upload ...string) (*osBuild, map[string]*fakeCloud, []byte) {
	t.Helper()
	b, clouds := publishFixture(t, upload...)
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>11)
	}
	b.snapshot = clouds["build"].store(b.spec.ImageName, "qcow2", b.info.imageProperties(false), data)
	attachPublication(b)
	return b, clouds, data
}

// signalOnce returns a channel closed at the first call of the function.
func signalOnce() (<-chan struct{}, func()) {
	ch := make(chan struct{})
	var once sync.Once
	return ch, func() { once.Do(func() { close(ch) }) }
}

// blockUntil is a body that gives nothing until ch is closed (then err) or
// ctx ends (then ctx's error).
type blockUntil struct {
	ctx context.Context
	ch  <-chan struct{}
	err error
}

func (r blockUntil) Read([]byte) (int, error) {
	select {
	case <-r.ch:
		return 0, r.err
	case <-r.ctx.Done():
		return 0, r.ctx.Err()
	}
}

func countCalls(calls []string, name string) int {
	n := 0
	for _, c := range calls {
		if c == name {
			n++
		}
	}
	return n
}

// A download cut midway while an upload is reading the spool is started
// again; the upload in flight goes on (it is not sent again) and every copy
// holds the snapshot's data.
func TestCopyDownloadCutWhileUploading(t *testing.T) {
	synctest.Test(t, testCopyDownloadCutWhileUploading) // the retry's pause takes no time
}

func testCopyDownloadCutWhileUploading(t *testing.T) {
	b, clouds, data := streamFixture(t, "east", "west")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	uploading, uploadRead := signalOnce()
	clouds["east"].onUploadRead = uploadRead
	clouds["build"].downloadBody = func(ctx context.Context, n int, data []byte) io.Reader {
		if n > 1 {
			return bytes.NewReader(data)
		}
		// Half the data, then, once east has read some of it, a cut.
		return io.MultiReader(bytes.NewReader(data[:len(data)/2]), blockUntil{ctx, uploading, io.ErrUnexpectedEOF})
	}

	if err := b.copy(ctx); err != nil {
		t.Fatal(err)
	}
	if n := clouds["build"].downloads; n != 2 {
		t.Errorf("%d downloads, want 2 (one cut, one retry)", n)
	}
	for _, name := range []string{"east", "west"} {
		c := clouds[name]
		if n := countCalls(c.calls, "UploadImage"); n != 1 {
			t.Errorf("%s: %d uploads, want 1 (the upload in flight goes on)", name, n)
		}
		copied := b.pub.copies.done[name]
		if !bytes.Equal(c.data[copied.image.ID], data) {
			t.Errorf("%s: the copy holds %d bytes that differ from the snapshot's %d", name, len(c.data[copied.image.ID]), len(data))
		}
		if copied.image.Checksum != b.snapshot.Checksum {
			t.Errorf("%s: checksum %s, want %s", name, copied.image.Checksum, b.snapshot.Checksum)
		}
	}
	if err := b.pub.cleanupCopies(ctx, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(b.pub.copies.tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file left: %v", err)
	}
}

// A download that does not match the snapshot fails the copy step (exit 8,
// naming the snapshot) although the uploads were already reading it: none
// of them reaches the end of the data, and the cleanup removes every copy
// and the temporary file. So does one whose retry ends before the bytes an
// earlier attempt got, and one refused for good.
func TestCopyDownloadFails(t *testing.T) {
	tests := []struct {
		name string
		// body makes the nth download's body; uploading is closed once
		// every upload has read some data.
		body func(ctx context.Context, n int, data []byte, uploading <-chan struct{}) io.Reader
		want string
	}{
		{"corrupt", func(ctx context.Context, _ int, data []byte, uploading <-chan struct{}) io.Reader {
			data[len(data)-1] ^= 1
			head, last := data[:len(data)-1], data[len(data)-1:]
			return io.MultiReader(bytes.NewReader(head), blockUntil{ctx, uploading, io.EOF}, bytes.NewReader(last))
		}, "does not match it: checksum"},
		{"shorter on retry", func(ctx context.Context, n int, data []byte, uploading <-chan struct{}) io.Reader {
			if n > 1 {
				return bytes.NewReader(data[:len(data)/4])
			}
			return io.MultiReader(bytes.NewReader(data[:len(data)/2]), blockUntil{ctx, uploading, io.ErrUnexpectedEOF})
		}, "it ends after 262144 bytes, an earlier attempt got 524288"},
		{"cut every time", func(ctx context.Context, _ int, data []byte, uploading <-chan struct{}) io.Reader {
			return io.MultiReader(bytes.NewReader(data[:len(data)/2]), blockUntil{ctx, uploading, io.ErrUnexpectedEOF})
		}, "unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b, clouds, _ := streamFixture(t, "east", "west")
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				eastReading, eastRead := signalOnce()
				westReading, westRead := signalOnce()
				clouds["east"].onUploadRead, clouds["west"].onUploadRead = eastRead, westRead
				uploading := make(chan struct{})
				go func() {
					<-eastReading
					<-westReading
					close(uploading)
				}()
				clouds["build"].downloadBody = func(ctx context.Context, n int, data []byte) io.Reader {
					return tt.body(ctx, n, data, uploading)
				}

				err := b.copy(ctx)
				if errs.ExitCode(err) != 8 || !strings.Contains(err.Error(), "snapshot "+b.snapshot.ID) ||
					!strings.Contains(err.Error(), tt.want) {
					t.Fatalf("err = %v (exit %d), want a publish failure naming snapshot %s and %q", err, errs.ExitCode(err), b.snapshot.ID, tt.want)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error of several lines: %q", err)
				}
				for _, name := range []string{"east", "west"} {
					c := clouds[name]
					if len(c.images) == 0 {
						t.Errorf("%s: no copy was created: the uploads did not start before the download ended", name)
					}
					for id, im := range c.images {
						if im.Status != openstack.ImageQueued {
							t.Errorf("%s: copy %s is %s: an upload reached the end of unverified data", name, id, im.Status)
						}
					}
				}
				cleanupFailedCopy(t, ctx, b, clouds)
			})
		})
	}
}

// An upload refused for good stops the download and the other uploads; the
// error names the cloud.
func TestCopyUploadFailsStopsDownload(t *testing.T) {
	synctest.Test(t, testCopyUploadFailsStopsDownload) // a download not stopped fails at once at the deadline
}

func testCopyUploadFailsStopsDownload(t *testing.T) {
	b, clouds, _ := streamFixture(t, "east", "west")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	clouds["west"].fail["UploadImage"] = errors.New("upload image: HTTP 413 Request Entity Too Large")
	clouds["build"].downloadBody = func(dctx context.Context, _ int, data []byte) io.Reader {
		// Half the data, then nothing until the download's context ends.
		return io.MultiReader(bytes.NewReader(data[:len(data)/2]), blockUntil{ctx: dctx})
	}

	err := b.copy(ctx)
	if ctx.Err() != nil {
		t.Fatal("the copy step returned only at the test's deadline: the download was not stopped")
	}
	if errs.ExitCode(err) != 8 || !strings.Contains(err.Error(), "cloud west: uploading image") ||
		!strings.Contains(err.Error(), "413") {
		t.Fatalf("err = %v (exit %d), want a publish failure naming cloud west", err, errs.ExitCode(err))
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error of several lines: %q", err)
	}
	if err := b.pub.cleanupCopies(ctx, true); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"east", "west"} {
		if n := len(clouds[name].images); n != 0 {
			t.Errorf("%s keeps %d images after the failed copy", name, n)
		}
	}
	if !slices.Contains(clouds["east"].calls, "DeleteImage") {
		t.Error("east's copy, whose upload was stopped, was not deleted")
	}
}

// cleanupFailedCopy runs the copy's cleanup of a failed build and checks
// that it left no copy in east or west and no scratch file.
func cleanupFailedCopy(t *testing.T, ctx context.Context, b *osBuild, clouds map[string]*fakeCloud) {
	t.Helper()
	if err := b.pub.cleanupCopies(ctx, true); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"east", "west"} {
		if n := len(clouds[name].images); n != 0 {
			t.Errorf("%s keeps %d images after the failed copy", name, n)
		}
	}
	if _, err := os.Stat(b.pub.copies.tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file left: %v", err)
	}
}
