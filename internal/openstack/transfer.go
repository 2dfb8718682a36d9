package openstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// TransferIdleTimeout is how long an image transfer may wait on the cloud
// without a byte moving: a download whose body stops arriving, an upload
// whose body the cloud stops reading. ResponseTimeout covers the wait for a
// response's headers; this covers the body in between.
const TransferIdleTimeout = 2 * time.Minute

// StalledError ends a transfer on which the cloud moved no byte for After.
// It is a network timeout (IsTransient): the transfer may be started again.
type StalledError struct {
	What  string // e.g. "download of image 1234"
	After time.Duration
}

func (e *StalledError) Error() string {
	return fmt.Sprintf("%s stalled: no byte moved for %s", e.What, e.After)
}

// Timeout and Temporary make a StalledError a net.Error that timed out.
func (e *StalledError) Timeout() bool   { return true }
func (e *StalledError) Temporary() bool { return true }

// stallWatch cancels a transfer's request context (with a *StalledError as
// its cause) when the cloud has kept it waiting for idle. The transfer
// marks when it starts waiting on the cloud and when it stops; time spent
// on our side (hashing, waiting for the spool) never counts.
type stallWatch struct {
	mu    sync.Mutex
	timer *time.Timer
	idle  time.Duration
}

// watchTransfer returns ctx's child for the transfer's request, its watch
// and a stop function to call when the transfer is over.
func watchTransfer(ctx context.Context, what string, idle time.Duration) (context.Context, *stallWatch, func()) {
	if idle <= 0 {
		idle = TransferIdleTimeout
	}
	rctx, cancel := context.WithCancelCause(ctx)
	w := &stallWatch{idle: idle}
	w.timer = time.AfterFunc(idle, func() { cancel(&StalledError{What: what, After: idle}) })
	w.timer.Stop()
	return rctx, w, func() {
		w.timer.Stop()
		cancel(nil)
	}
}

// waiting marks that the transfer now waits on the cloud.
func (w *stallWatch) waiting() {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.timer.Reset(w.idle)
}

// notWaiting marks that the cloud is not what the transfer waits on.
func (w *stallWatch) notWaiting() {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.timer.Stop()
}

// stalled returns the *StalledError that ended rctx, if that is what
// ended it.
func stalled(rctx context.Context) error {
	var se *StalledError
	if errors.As(context.Cause(rctx), &se) {
		return se
	}
	return nil
}

// watchedBody is a download's body: each Read waits on the cloud.
type watchedBody struct {
	body io.ReadCloser
	rctx context.Context
	w    *stallWatch
	stop func()
}

func (b *watchedBody) Read(p []byte) (int, error) {
	b.w.waiting()
	n, err := b.body.Read(p)
	b.w.notWaiting()
	if err != nil && err != io.EOF {
		if se := stalled(b.rctx); se != nil {
			return n, se
		}
	}
	return n, err
}

func (b *watchedBody) Close() error {
	err := b.body.Close()
	b.stop()
	return err
}
