package openstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// uploadBody is the request body of an image upload. gophercloud re-sends a
// request after re-authenticating on a 401 and rewinds a body that is an
// io.Seeker; net/http, however, closes a request body when it is done with it,
// possibly in another goroutine after the response came back. Handing it the
// caller's *os.File would let the first request close the file (the re-send
// then fails) or read from it while it is being rewound (the re-send would
// miss bytes: a silently truncated image). uploadBody shields the file: Close
// only ends the current send, and Seek waits for that before rewinding, so
// each send reads the whole file from its start and nothing else reads it.
type uploadBody struct {
	src io.ReaderAt
	// watch, if set, is told when net/http holds a chunk it has read: it
	// then waits on the cloud to take it, until the next Read.
	watch *stallWatch

	mu   sync.Mutex
	off  int64
	done chan struct{} // closed when net/http closed the current send
	once *sync.Once
}

// rewindWait bounds how long Seek waits for net/http to let go of the
// previous send.
const rewindWait = time.Minute

func newUploadBody(src io.ReaderAt) *uploadBody {
	return &uploadBody{src: src, done: make(chan struct{}), once: &sync.Once{}}
}

func (b *uploadBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.watch.notWaiting() // reading the source is our side's time
	n, err := b.src.ReadAt(p, b.off)
	b.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil // io.Reader: report EOF on the next call
	}
	if err == nil {
		b.watch.waiting() // net/http now sends the chunk: the cloud must take it
	}
	return n, err
}

// Close ends the current send (net/http calls it); the source stays open.
func (b *uploadBody) Close() error {
	b.mu.Lock()
	done, once := b.done, b.once
	b.mu.Unlock()
	once.Do(func() { close(done) })
	return nil
}

// Seek rewinds to the start for a re-send, once net/http closed the previous
// send. Only Seek(0, io.SeekStart) is supported: that is all gophercloud does.
func (b *uploadBody) Seek(offset int64, whence int) (int64, error) {
	if offset != 0 || whence != io.SeekStart {
		return 0, errors.New("upload body: only a rewind to the start is supported")
	}
	b.mu.Lock()
	started := b.off > 0
	done := b.done
	b.mu.Unlock()
	if started {
		ctx, cancel := context.WithTimeout(context.Background(), rewindWait)
		defer cancel()
		select {
		case <-done:
		case <-ctx.Done():
			return 0, fmt.Errorf("upload body: the previous send was not released within %s", rewindWait)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.off = 0
	b.done, b.once = make(chan struct{}), &sync.Once{}
	return 0, nil
}
