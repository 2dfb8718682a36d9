package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// qmp is a connection to qemu's machine protocol socket: one command at a
// time, with asynchronous events (SHUTDOWN) recorded as they arrive.
type qmp struct {
	conn    net.Conn
	replies chan qmpMessage
	closed  chan struct{} // closed when the connection ended (qemu exited)
	stop    chan struct{} // closed by close: the reader stops waiting to deliver
	once    sync.Once

	cmdMu  sync.Mutex // one command in flight
	nextID int

	mu       sync.Mutex
	shutdown *ShutdownEvent
}

// ShutdownEvent is qemu's SHUTDOWN event: who asked the machine to stop.
type ShutdownEvent struct {
	Guest  bool   `json:"guest"`  // the guest powered itself off (or reset with -no-reboot)
	Reason string `json:"reason"` // e.g. guest-shutdown, host-qmp-system-reset, host-signal
}

type qmpMessage struct {
	QMP    json.RawMessage `json:"QMP"`
	Event  string          `json:"event"`
	Data   json.RawMessage `json:"data"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	ID any `json:"id"`
}

// dialQMP connects to the socket at path, retrying while qemu creates it,
// until ctx ends or gone is closed (qemu exited). It reads the greeting and
// leaves capability negotiation mode.
func dialQMP(ctx context.Context, path string, gone <-chan struct{}) (*qmp, error) {
	var d net.Dialer
	var conn net.Conn
	var lastErr error
	for conn == nil {
		c, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			conn = c
			break
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("QMP socket %s: %w (last error: %v)", path, context.Cause(ctx), lastErr)
		case <-gone:
			return nil, errors.New("qemu exited before its QMP socket answered")
		case <-time.After(50 * time.Millisecond):
		}
	}
	q := &qmp{conn: conn, replies: make(chan qmpMessage, 8), closed: make(chan struct{}), stop: make(chan struct{})}
	greeting := make(chan error, 1)
	go q.read(greeting)
	select {
	case err := <-greeting:
		if err != nil {
			q.close()
			return nil, fmt.Errorf("QMP greeting: %w", err)
		}
	case <-ctx.Done():
		q.close()
		return nil, fmt.Errorf("QMP greeting: %w", context.Cause(ctx))
	}
	if _, err := q.execute(ctx, "qmp_capabilities", nil); err != nil {
		q.close()
		return nil, err
	}
	return q, nil
}

// read decodes messages until the connection ends; the first must be the
// greeting, whose outcome is sent on greeting.
func (q *qmp) read(greeting chan<- error) {
	defer close(q.closed)
	dec := json.NewDecoder(bufio.NewReader(q.conn))
	first := true
	for {
		var m qmpMessage
		if err := dec.Decode(&m); err != nil {
			if first {
				greeting <- err
			}
			return
		}
		switch {
		case first:
			first = false
			if m.QMP == nil {
				greeting <- errors.New("the first message is not a QMP greeting")
				return
			}
			greeting <- nil
		case m.Event != "":
			if m.Event == "SHUTDOWN" {
				var ev ShutdownEvent
				_ = json.Unmarshal(m.Data, &ev)
				q.mu.Lock()
				q.shutdown = &ev
				q.mu.Unlock()
			}
		default:
			select {
			case q.replies <- m:
			case <-q.stop:
				return
			}
		}
	}
}

// execute runs one QMP command and returns its "return" value.
func (q *qmp) execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	q.cmdMu.Lock()
	defer q.cmdMu.Unlock()
	// Drop stale replies of earlier commands whose callers gave up.
	for drained := false; !drained; {
		select {
		case <-q.replies:
		default:
			drained = true
		}
	}
	q.nextID++
	id := fmt.Sprintf("grib-%d", q.nextID)
	req := map[string]any{"execute": command, "id": id}
	if args != nil {
		req["arguments"] = args
	}
	data, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = q.conn.SetWriteDeadline(dl)
	}
	if _, err := q.conn.Write(append(data, '\n')); err != nil {
		return nil, fmt.Errorf("QMP %s: %w", command, err)
	}
	for {
		select {
		case m := <-q.replies:
			if m.ID != id {
				continue
			}
			if m.Error != nil {
				return nil, fmt.Errorf("QMP %s: %s: %s", command, m.Error.Class, m.Error.Desc)
			}
			return m.Return, nil
		case <-q.closed:
			return nil, fmt.Errorf("QMP %s: qemu closed the connection", command)
		case <-ctx.Done():
			return nil, fmt.Errorf("QMP %s: %w", command, context.Cause(ctx))
		}
	}
}

// lastShutdown returns the SHUTDOWN event seen, if any.
func (q *qmp) lastShutdown() *ShutdownEvent {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.shutdown
}

func (q *qmp) close() error {
	q.once.Do(func() { close(q.stop) })
	return q.conn.Close()
}
