package faultproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// Direction is one way of a proxied TCP connection.
type Direction int

// The two directions of a TCP connection through the proxy.
const (
	ToUpstream Direction = iota // bytes the client sends
	ToClient                    // bytes the upstream answers
)

func (d Direction) String() string {
	if d == ToClient {
		return "to client"
	}
	return "to upstream"
}

// tcpBuffer is what one direction of a connection reads before forwarding.
const tcpBuffer = 32 << 10

// TCP is a fault-injecting TCP proxy on loopback in front of one loopback
// upstream (for example a guest's sshd). Its fault controls act on the
// connections while they run. Its methods are safe for concurrent use.
type TCP struct {
	upstream string
	ln       net.Listener
	dialer   *net.Dialer
	done     chan struct{} // closed by Close

	mu       sync.Mutex
	closed   bool
	conns    map[*tcpConn]struct{}
	accepted int
	resets   int
	held     int           // chunks a stall held
	stall    chan struct{} // non-nil while stalled; closed when released
	gateHook func(Direction)

	wg sync.WaitGroup // the accept loop and every connection's goroutines
}

// tcpConn is one client connection and its upstream connection.
type tcpConn struct {
	p      *TCP
	client *net.TCPConn
	gone   chan struct{} // closed when the connection is reset

	mu       sync.Mutex
	upstream *net.TCPConn // nil until dialled
	cut      [2]int64     // per Direction: bytes that may still pass before a reset; -1: no cut
	reset    bool
}

// NewTCP starts a proxy listening on 127.0.0.1:0 that forwards every
// connection to upstream (host:port), which must be a loopback address.
// Close it when done.
func NewTCP(upstream string) (*TCP, error) {
	host, port, err := net.SplitHostPort(upstream)
	if err != nil || port == "" {
		return nil, errs.Usage("faultproxy: TCP upstream %q: want <loopback address>:<port>", upstream)
	}
	if !isLoopbackHost(host) {
		return nil, errs.Usage("faultproxy: TCP upstream %q is not on loopback: only 127.0.0.0/8, ::1 and localhost are proxied", upstream)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listening on loopback: %w", err)
	}
	p := &TCP{
		upstream: upstream,
		ln:       ln,
		dialer:   &net.Dialer{Timeout: dialTimeout, Control: loopbackOnly},
		done:     make(chan struct{}),
		conns:    map[*tcpConn]struct{}{},
	}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the proxy's listening address (127.0.0.1:PORT): dial it in place
// of the upstream.
func (p *TCP) Addr() string { return p.ln.Addr().String() }

// Upstream is the address every connection is forwarded to.
func (p *TCP) Upstream() string { return p.upstream }

// Accepted counts the client connections accepted so far.
func (p *TCP) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Open counts the connections open now.
func (p *TCP) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Resets counts the connections reset by ResetAll or a cut so far.
func (p *TCP) Resets() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.resets
}

// Held counts the reads (of one direction of one connection) a stall held
// back so far: a stall that held nothing did not stop any traffic.
func (p *TCP) Held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held
}

// ResetAll resets every open connection now: the client sees a TCP reset
// (ECONNRESET) and the upstream connection is reset too. It returns how many
// connections it reset. New connections are accepted as before.
func (p *TCP) ResetAll() int {
	n := 0
	for _, c := range p.open() {
		if c.abort() {
			n++
		}
	}
	return n
}

// Stall stops forwarding in both directions on every connection, open now
// or accepted later: bytes read are held until Release, or until d passes
// when d > 0. Connections stay open. Stalling while stalled keeps the
// current stall (and its end).
func (p *TCP) Stall(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stall != nil || p.closed {
		return
	}
	ch := make(chan struct{})
	p.stall = ch
	if d > 0 {
		time.AfterFunc(d, func() { p.release(ch) })
	}
}

// Release ends a stall: held bytes are forwarded. It does nothing when the
// proxy is not stalled.
func (p *TCP) Release() {
	p.mu.Lock()
	ch := p.stall
	p.mu.Unlock()
	if ch != nil {
		p.release(ch)
	}
}

func (p *TCP) release(ch chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stall == ch {
		close(ch)
		p.stall = nil
	}
}

// CutAfter arms a cut on every connection open now: the first n more bytes
// in direction dir pass, and the connection is reset (both sides) when the
// next byte would. On Linux the n bytes are delivered (acknowledged, at most
// 5 s) before the reset. It returns how many connections it armed.
// Connections accepted later are not cut.
func (p *TCP) CutAfter(dir Direction, n int64) int {
	if n < 0 {
		n = 0
	}
	armed := 0
	for _, c := range p.open() {
		c.mu.Lock()
		if !c.reset {
			c.cut[dir] = n
			armed++
		}
		c.mu.Unlock()
	}
	return armed
}

// Close stops listening, resets every open connection (ending any stall)
// and waits for the proxy's goroutines. Calling it again does nothing.
func (p *TCP) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	err := p.ln.Close()
	p.mu.Unlock()
	p.ResetAll()
	p.wg.Wait()
	if err != nil {
		return fmt.Errorf("faultproxy: close: %w", err)
	}
	return nil
}

func (p *TCP) open() []*tcpConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*tcpConn, 0, len(p.conns))
	for c := range p.conns {
		out = append(out, c)
	}
	return out
}

func (p *TCP) acceptLoop() {
	defer p.wg.Done()
	for {
		nc, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // a transient accept error (EMFILE, ECONNABORTED)
		}
		client, ok := nc.(*net.TCPConn)
		if !ok { // cannot happen: a TCP listener
			_ = nc.Close()
			continue
		}
		c := &tcpConn{p: p, client: client, gone: make(chan struct{}), cut: [2]int64{-1, -1}}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			resetConn(client)
			return
		}
		p.accepted++
		p.conns[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go c.serve()
	}
}

// serve dials the upstream and forwards both ways until both end.
func (c *tcpConn) serve() {
	p := c.p
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()
	nc, err := p.dialer.Dial("tcp", p.upstream)
	if err != nil {
		resetConn(c.client) // the client sees the upstream refuse
		return
	}
	c.mu.Lock()
	c.upstream = nc.(*net.TCPConn)
	aborted := c.reset
	c.mu.Unlock()
	if aborted {
		resetConn(c.upstream)
		return
	}
	var pumps sync.WaitGroup
	pumps.Go(func() { c.pump(ToUpstream, c.client, c.upstream) })
	pumps.Go(func() { c.pump(ToClient, c.upstream, c.client) })
	pumps.Wait()
	_ = c.client.Close()
	_ = c.upstream.Close()
}

// pump forwards src to dst in direction dir, through the stall gate and
// the cut, until src ends (dst is then half-closed) or the connection is
// reset (a read error other than EOF resets it).
func (c *tcpConn) pump(dir Direction, src, dst *net.TCPConn) {
	buf := make([]byte, tcpBuffer)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !c.p.gate(c, dir) || !c.forward(dir, dst, buf[:n]) {
				return
			}
		}
		if errors.Is(err, io.EOF) {
			_ = dst.CloseWrite()
			return
		}
		if err != nil {
			c.abortQuietly()
			return
		}
	}
}

// forward writes b to dst, applying an armed cut; false: the connection is gone.
func (c *tcpConn) forward(dir Direction, dst *net.TCPConn, b []byte) bool {
	c.mu.Lock()
	left := c.cut[dir]
	cutNow := left >= 0 && int64(len(b)) > left
	if left >= 0 && !cutNow {
		c.cut[dir] = left - int64(len(b))
	}
	c.mu.Unlock()
	if cutNow {
		b = b[:left]
	}
	if _, err := dst.Write(b); err != nil {
		c.abortQuietly()
		return false
	}
	if cutNow {
		awaitAcked(dst, ackWait, c.p.done)
		c.abort()
		return false
	}
	return true
}

// gate blocks while the proxy is stalled; false: the connection or the
// proxy ended meanwhile.
func (p *TCP) gate(c *tcpConn, dir Direction) bool {
	p.mu.Lock()
	ch, hook := p.stall, p.gateHook
	if ch != nil {
		p.held++
	}
	p.mu.Unlock()
	if ch == nil {
		return true
	}
	if hook != nil {
		hook(dir)
	}
	select {
	case <-ch:
		return true
	case <-c.gone:
		return false
	case <-p.done:
		return false
	}
}

// abort resets both sides of c and counts it as a fault; false when c was
// reset already.
func (c *tcpConn) abort() bool { return c.resetBoth(true) }

// abortQuietly resets c after a network error (not counted as a fault).
func (c *tcpConn) abortQuietly() { c.resetBoth(false) }

func (c *tcpConn) resetBoth(fault bool) bool {
	c.mu.Lock()
	if c.reset {
		c.mu.Unlock()
		return false
	}
	c.reset = true
	up := c.upstream
	close(c.gone)
	c.mu.Unlock()
	if fault { // counted before the client can see it
		c.p.mu.Lock()
		c.p.resets++
		c.p.mu.Unlock()
	}
	resetConn(c.client)
	if up != nil {
		resetConn(up)
	}
	return true
}

// resetConn closes conn with SO_LINGER 0: the peer sees a TCP reset.
func resetConn(conn *net.TCPConn) {
	_ = conn.SetLinger(0)
	_ = conn.Close()
}
