//go:build linux

package faultproxy

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// awaitAcked waits until the peer has acknowledged every byte written to
// conn (the socket's SIOCOUTQ is 0), at most limit or until done closes.
// A reset with SO_LINGER 0 drops whatever is still queued, so a cut response
// waits here first to deliver exactly the bytes it promised. There is no
// event for "send queue empty": it polls every millisecond.
func awaitAcked(conn *net.TCPConn, limit time.Duration, done <-chan struct{}) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return
	}
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		queued, ioctlErr := 0, error(nil)
		err := raw.Control(func(fd uintptr) { queued, ioctlErr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) })
		if err != nil || ioctlErr != nil || queued == 0 {
			return
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			return
		case <-done:
			return
		}
	}
}
