package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// spool is a scratch file (0600) that one writer appends to while any
// number of readers read it: a read waits for the bytes it needs until they
// are written, the spool is finished (then it ends with io.EOF), failed (then
// it fails with that error) or the reader's context ends. It lets the copy
// step upload a snapshot while still downloading it.
type spool struct {
	f *os.File

	mu      sync.Mutex
	size    int64         // bytes written
	ended   bool          // finished or failed: no more bytes come
	err     error         // why it failed; nil while open or once finished
	changed chan struct{} // closed, then replaced, whenever the fields above change
}

var errSpoolClosed = errors.New("spool closed")

// newSpool creates an empty spool in a new temporary file in dir ("" is
// os.TempDir). The caller closes it and removes the file (Name).
func newSpool(dir string) (*spool, error) {
	f, err := os.CreateTemp(dir, "grib-snapshot-*.img")
	if err != nil {
		return nil, err
	}
	return &spool{f: f, changed: make(chan struct{})}, nil
}

// Name is the file's path.
func (s *spool) Name() string { return s.f.Name() }

// Len is how many bytes the spool holds.
func (s *spool) Len() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}

// Write appends p. One goroutine writes; readers may read meanwhile.
func (s *spool) Write(p []byte) (int, error) {
	s.mu.Lock()
	off, ended := s.size, s.ended
	s.mu.Unlock()
	if ended {
		return 0, fmt.Errorf("writing %s: the spool has ended", s.Name())
	}
	n, err := s.f.WriteAt(p, off) // only this goroutine moves size: no lock needed for the write
	s.mu.Lock()
	s.size += int64(n)
	s.broadcast()
	s.mu.Unlock()
	return n, err
}

// finish ends the spool: with err nil, readers read to its end and get
// io.EOF there; otherwise every read, waiting or to come, fails with err.
// Only the first call counts.
func (s *spool) finish(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	s.ended, s.err = true, err
	s.broadcast()
}

// Close fails the spool if it was not finished (waking any reader) and
// closes the file; it does not remove it.
func (s *spool) Close() error {
	s.finish(errSpoolClosed)
	return s.f.Close()
}

// broadcast wakes every waiting reader; s.mu is held.
func (s *spool) broadcast() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// await waits until the spool holds end bytes or has been finished, and
// returns how many bytes it holds; or the spool's failure, or ctx's error
// (ctx matters only when there is something to wait for).
func (s *spool) await(ctx context.Context, end int64) (int64, error) {
	for {
		s.mu.Lock()
		size, ended, err, changed := s.size, s.ended, s.err, s.changed
		s.mu.Unlock()
		switch {
		case err != nil:
			return 0, err
		case size >= end || ended:
			return size, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// reader returns a reader of the spool from its start, whose reads wait
// at most until ctx ends.
func (s *spool) reader(ctx context.Context) *spoolReader {
	return &spoolReader{s: s, ctx: ctx}
}

// spoolReader is an io.ReadSeeker and an io.ReaderAt over a spool. ReadAt
// may be called concurrently; Read and Seek may not.
type spoolReader struct {
	s   *spool
	ctx context.Context
	off int64 // of Read and Seek
}

// ReadAt reads len(p) bytes at off, waiting until they are written; at the
// end of a finished spool it returns fewer, with io.EOF.
func (r *spoolReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("spool: negative offset")
	}
	if len(p) == 0 {
		return 0, nil
	}
	size, err := r.s.await(r.ctx, off+int64(len(p)))
	if err != nil {
		return 0, err
	}
	if off >= size {
		return 0, io.EOF
	}
	n, err := r.s.f.ReadAt(p[:min(int64(len(p)), size-off)], off)
	if err == nil && n < len(p) {
		err = io.EOF
	}
	return n, err
}

// Read reads what the spool holds past the offset, waiting for at least
// one byte.
func (r *spoolReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	size, err := r.s.await(r.ctx, r.off+1)
	if err != nil {
		return 0, err
	}
	if r.off >= size {
		return 0, io.EOF
	}
	n, err := r.s.f.ReadAt(p[:min(int64(len(p)), size-r.off)], r.off)
	r.off += int64(n)
	return n, err
}

// Seek sets the offset of Read. The end (io.SeekEnd) is known only once the
// spool is finished.
func (r *spoolReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		r.s.mu.Lock()
		size, finished := r.s.size, r.s.ended && r.s.err == nil
		r.s.mu.Unlock()
		if !finished {
			return 0, errors.New("spool: the end is not known before the spool is finished")
		}
		offset += size
	default:
		return 0, errors.New("spool: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("spool: negative offset")
	}
	r.off = offset
	return offset, nil
}
