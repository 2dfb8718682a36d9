package faultproxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// ackWait bounds how long a reset waits for the client to receive what was
// already sent (a client that stops reading gets its reset anyway).
const ackWait = 5 * time.Second

var (
	// errRequestCut ends a request body cut by a CutRequest fault.
	errRequestCut = errors.New("faultproxy: request body cut")
	// errResponseCut ends a response body cut by a CutResponse fault.
	errResponseCut = errors.New("faultproxy: response body cut")
	// errHijacked is returned by writes after the connection was reset.
	errHijacked = errors.New("faultproxy: connection was reset")
)

// recorder wraps a request's ResponseWriter: it notes the status for the
// request log, cuts the response body after cutAfter bytes, and resets the
// connection on demand.
type recorder struct {
	http.ResponseWriter
	status     int             // first final status written; 0 if none
	written    int64           // response body bytes written
	cutAfter   int64           // response body bytes let through before a reset; <0: no cut
	stallFirst <-chan struct{} // if set, the reset waits for it (the request's end) or Close
	requestCut atomic.Bool     // set by cutReader (on the transport's goroutine)
	hijacked   atomic.Bool     // the connection was reset; nothing more may be written
	done       <-chan struct{} // the proxy's: closed by Close
}

// Unwrap lets http.NewResponseController reach the server's writer.
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// FlushError flushes unless the connection was reset. ReverseProxy flushes
// from a timer goroutine too, which may run after a reset; net/http's own
// writer must not be touched then.
func (w *recorder) FlushError() error {
	if w.hijacked.Load() {
		return errHijacked
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *recorder) WriteHeader(code int) {
	if w.hijacked.Load() {
		return
	}
	if code >= 200 && w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.hijacked.Load() {
		return 0, errHijacked
	}
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.cutAfter >= 0 && w.written+int64(len(b)) > w.cutAfter {
		n, err := w.ResponseWriter.Write(b[:w.cutAfter-w.written])
		w.written += int64(n)
		if err != nil {
			return n, err
		}
		if w.stallFirst != nil {
			_ = http.NewResponseController(w.ResponseWriter).Flush()
			select { // a stalled transfer: nothing more until the client gives up
			case <-w.stallFirst:
			case <-w.done:
			}
		}
		w.reset()
		return n, errResponseCut
	}
	n, err := w.ResponseWriter.Write(b)
	w.written += int64(n)
	return n, err
}

// reset sends what was written so far and waits (at most ackWait) for the
// client to receive it, then closes the connection with SO_LINGER 0, so the
// client sees a TCP reset (ECONNRESET).
func (w *recorder) reset() {
	if w.hijacked.Load() {
		return
	}
	rc := http.NewResponseController(w.ResponseWriter)
	if w.status != 0 {
		_ = rc.Flush()
	}
	conn, _, err := rc.Hijack()
	if err != nil {
		// Not hijackable (cannot happen with the proxy's own HTTP/1 server):
		// abort the response the only other way net/http offers.
		panic(http.ErrAbortHandler)
	}
	w.hijacked.Store(true)
	if tc, ok := conn.(*net.TCPConn); ok {
		if w.status != 0 {
			awaitAcked(tc, ackWait, w.done)
		}
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// cutReader lets the first left bytes of a request body through, then fails
// (and marks the request as cut) if any byte remains. A body of at most left
// bytes passes whole.
type cutReader struct {
	r    io.ReadCloser
	left int64
	rec  *recorder
}

func (c *cutReader) Read(b []byte) (int, error) {
	if c.left <= 0 {
		var one [1]byte
		if _, err := io.ReadFull(c.r, one[:]); err != nil {
			return 0, err // io.EOF: the body ended exactly at the cut
		}
		c.rec.requestCut.Store(true)
		return 0, errRequestCut
	}
	if int64(len(b)) > c.left {
		b = b[:c.left]
	}
	n, err := c.r.Read(b)
	c.left -= int64(n)
	return n, err
}

func (c *cutReader) Close() error { return c.r.Close() }
