package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// tcpUpstream is a loopback server for the TCP proxy's tests. Each
// connection echoes what it reads, except that a line "send N\n" makes it
// answer N bytes of 'x' instead. It records every byte it received.
type tcpUpstream struct {
	addr string

	mu       sync.Mutex
	received bytes.Buffer
	resets   int // connections that ended with ECONNRESET
}

func startTCPUpstream(t *testing.T) *tcpUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &tcpUpstream{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { u.serve(c) })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return u
}

func (u *tcpUpstream) serve(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			u.mu.Lock()
			u.received.Write(buf[:n])
			u.mu.Unlock()
			var want int
			if _, serr := fmtSscanf(string(buf[:n]), &want); serr == nil {
				_, _ = c.Write(bytes.Repeat([]byte{'x'}, want))
			} else {
				_, _ = c.Write(buf[:n])
			}
		}
		if err != nil {
			if errors.Is(err, syscall.ECONNRESET) {
				u.mu.Lock()
				u.resets++
				u.mu.Unlock()
			}
			return
		}
	}
}

func (u *tcpUpstream) got() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.received.String()
}

func (u *tcpUpstream) resetCount() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.resets
}

// fmtSscanf parses "send N\n".
func fmtSscanf(s string, n *int) (int, error) {
	var v int
	rest, ok := bytes.CutPrefix([]byte(s), []byte("send "))
	if !ok || len(rest) < 2 || rest[len(rest)-1] != '\n' {
		return 0, errors.New("not a send line")
	}
	for _, b := range rest[:len(rest)-1] {
		if b < '0' || b > '9' {
			return 0, errors.New("not a number")
		}
		v = v*10 + int(b-'0')
	}
	*n = v
	return 1, nil
}

func startTCPProxy(t *testing.T, upstream string) *TCP {
	t.Helper()
	p, err := NewTCP(upstream)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}

func dialTCP(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, safety)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(safety)) // turns a hang into a failure
	return c.(*net.TCPConn)
}

// roundTrip writes msg and reads len(msg) bytes of echo.
func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading the echo of %q: %v", msg, err)
	}
	if string(got) != msg {
		t.Fatalf("echo %q, want %q", got, msg)
	}
}

// expectReset reads until an error and wants a TCP reset; it returns what
// arrived before.
func expectReset(t *testing.T, c net.Conn) []byte {
	t.Helper()
	data, err := io.ReadAll(c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read ended with %v after %d bytes, want ECONNRESET", err, len(data))
	}
	return data
}

func TestNewTCPRefusesNonLoopbackUpstreams(t *testing.T) {
	for _, up := range []string{"10.0.0.1:22", "192.0.2.1:22", "example.com:22", "[2001:db8::1]:22", "127.0.0.1", "", "127.0.0.1:"} {
		if p, err := NewTCP(up); err == nil {
			_ = p.Close()
			t.Errorf("NewTCP(%q) accepted the upstream", up)
		} else if !errs.Is(err, errs.KindUsage) {
			t.Errorf("NewTCP(%q): %v, want a usage error", up, err)
		}
	}
	for _, up := range []string{"127.0.0.1:22", "127.77.0.5:22", "localhost:22", "[::1]:22"} {
		p, err := NewTCP(up)
		if err != nil {
			t.Errorf("NewTCP(%q): %v", up, err)
			continue
		}
		if host, _, _ := net.SplitHostPort(p.Addr()); host != "127.0.0.1" {
			t.Errorf("listening on %s, want 127.0.0.1", p.Addr())
		}
		_ = p.Close()
	}
}

func TestTCPForwardsAndCounts(t *testing.T) {
	u := startTCPUpstream(t)
	p := startTCPProxy(t, u.addr)
	for i := range 3 {
		c := dialTCP(t, p.Addr())
		roundTrip(t, c, "hello through the proxy")
		if got := p.Accepted(); got != i+1 {
			t.Errorf("Accepted() = %d after %d connections", got, i+1)
		}
	}
	if p.Open() != 3 || p.Resets() != 0 {
		t.Errorf("Open() = %d, Resets() = %d; want 3 and 0", p.Open(), p.Resets())
	}
	// A half-close reaches the upstream, whose answer still comes back.
	c := dialTCP(t, p.Addr())
	if _, err := io.WriteString(c, "bye"); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	if data, err := io.ReadAll(c); err != nil || string(data) != "bye" {
		t.Errorf("after a half-close read %q, %v; want the echo and EOF", data, err)
	}
}

func TestTCPUpstreamDownIsAReset(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	p := startTCPProxy(t, addr)
	// The reset may come before the client's connect returns.
	c, err := net.DialTimeout("tcp", p.Addr(), safety)
	if err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("dial: %v, want ECONNRESET or a connection that is reset", err)
		}
		return
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(safety))
	expectReset(t, c)
}

func TestTCPResetAll(t *testing.T) {
	u := startTCPUpstream(t)
	p := startTCPProxy(t, u.addr)
	a, b := dialTCP(t, p.Addr()), dialTCP(t, p.Addr())
	roundTrip(t, a, "a")
	roundTrip(t, b, "b")
	if n := p.ResetAll(); n != 2 {
		t.Errorf("ResetAll() = %d, want 2", n)
	}
	expectReset(t, a)
	expectReset(t, b)
	if p.Resets() != 2 {
		t.Errorf("Resets() = %d, want 2", p.Resets())
	}
	// The proxy still accepts and forwards new connections.
	roundTrip(t, dialTCP(t, p.Addr()), "after the reset")
	if p.Accepted() != 3 {
		t.Errorf("Accepted() = %d, want 3", p.Accepted())
	}
}

// stallObserved makes p report when a direction holds bytes at the stall.
func stallObserved(p *TCP) <-chan Direction {
	held := make(chan Direction, 16)
	p.mu.Lock()
	p.gateHook = func(d Direction) { held <- d }
	p.mu.Unlock()
	return held
}

func waitHeld(t *testing.T, held <-chan Direction, want Direction) {
	t.Helper()
	select {
	case d := <-held:
		if d != want {
			t.Fatalf("bytes held %s, want %s", d, want)
		}
	case <-time.After(safety):
		t.Fatalf("no bytes held %s", want)
	}
}

func TestTCPStallHoldsBytesUntilRelease(t *testing.T) {
	u := startTCPUpstream(t)
	p := startTCPProxy(t, u.addr)
	held := stallObserved(p)
	c := dialTCP(t, p.Addr())
	roundTrip(t, c, "before ")

	p.Stall(0)
	if _, err := io.WriteString(c, "during"); err != nil {
		t.Fatal(err)
	}
	waitHeld(t, held, ToUpstream)
	if got := u.got(); got != "before " {
		t.Errorf("the upstream received %q during the stall, want only %q", got, "before ")
	}
	// A connection made during the stall is accepted and held as well.
	late := dialTCP(t, p.Addr())
	if _, err := io.WriteString(late, "late"); err != nil {
		t.Fatal(err)
	}
	waitHeld(t, held, ToUpstream)

	p.Release()
	got := make([]byte, len("during"))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "during" {
		t.Fatalf("after Release read %q, %v", got, err)
	}
	got = make([]byte, len("late"))
	if _, err := io.ReadFull(late, got); err != nil || string(got) != "late" {
		t.Fatalf("late connection after Release read %q, %v", got, err)
	}
	if p.Resets() != 0 || p.Held() != 2 {
		t.Errorf("Resets() = %d, Held() = %d; want 0 and 2 (a stall resets nothing)", p.Resets(), p.Held())
	}
}

func TestTCPStallHoldsAnswers(t *testing.T) {
	// An upstream that speaks first, when told to.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	speak := make(chan struct{})
	served := make(chan struct{})
	go func() {
		defer close(served)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		<-speak
		_, _ = io.WriteString(c, "hello")
		_, _ = io.Copy(io.Discard, c)
	}()
	t.Cleanup(func() { <-served })
	p := startTCPProxy(t, ln.Addr().String())
	held := stallObserved(p)
	c := dialTCP(t, p.Addr())
	p.Stall(0)
	close(speak)
	waitHeld(t, held, ToClient)
	p.Release()
	got := make([]byte, 5)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "hello" {
		t.Fatalf("after Release read %q, %v", got, err)
	}
	_ = c.Close()
}

func TestTCPStallEndsByItself(t *testing.T) {
	u := startTCPUpstream(t)
	p := startTCPProxy(t, u.addr)
	c := dialTCP(t, p.Addr())
	p.Stall(50 * time.Millisecond)
	roundTrip(t, c, "arrives once the stall ends") // no Release
}

func TestTCPCloseEndsAStall(t *testing.T) {
	u := startTCPUpstream(t)
	p, err := NewTCP(u.addr)
	if err != nil {
		t.Fatal(err)
	}
	held := stallObserved(p)
	c := dialTCP(t, p.Addr())
	p.Stall(0)
	if _, err := io.WriteString(c, "held forever"); err != nil {
		t.Fatal(err)
	}
	waitHeld(t, held, ToUpstream)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	expectReset(t, c)
	if _, err := net.DialTimeout("tcp", p.Addr(), safety); err == nil {
		t.Error("the proxy still accepts connections after Close")
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestTCPCutToClient(t *testing.T) {
	u := startTCPUpstream(t)
	p := startTCPProxy(t, u.addr)
	c := dialTCP(t, p.Addr())
	other := dialTCP(t, p.Addr())
	roundTrip(t, c, "ready")
	roundTrip(t, other, "ready")
	if n := p.CutAfter(ToClient, 1000); n != 2 {
		t.Fatalf("CutAfter armed %d connections, want 2", n)
	}
	later := dialTCP(t, p.Addr()) // opened after the cut: not cut
	roundTrip(t, c, "first 4")    // 7 bytes of the 1000 pass
	if _, err := io.WriteString(c, "send 200000\n"); err != nil {
		t.Fatal(err)
	}
	data := expectReset(t, c)
	if len(data) != 1000-len("first 4") {
		t.Errorf("received %d bytes before the reset, want exactly %d", len(data), 1000-len("first 4"))
	}
	if p.Resets() != 1 {
		t.Errorf("Resets() = %d, want 1", p.Resets())
	}
	// The other armed connection still passes up to its 1000 bytes.
	roundTrip(t, other, "still fine")
	if _, err := io.WriteString(later, "send 5000\n"); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(io.LimitReader(later, 5000)); err != nil || len(got) != 5000 {
		t.Errorf("a connection opened after the cut read %d bytes, %v; want 5000", len(got), err)
	}
}

func TestTCPCutToUpstream(t *testing.T) {
	u := startTCPUpstream(t)
	p := startTCPProxy(t, u.addr)
	c := dialTCP(t, p.Addr())
	roundTrip(t, c, "ok")
	p.CutAfter(ToUpstream, 10)
	if _, err := io.WriteString(c, "0123456789-and-more"); err != nil {
		t.Fatal(err)
	}
	// The client may first read the echo of the 10 bytes that passed.
	data := expectReset(t, c)
	if len(data) > 10 {
		t.Errorf("echo of %q after the cut, want at most the first 10 bytes", data)
	}
	if got := u.got(); got != "ok0123456789" {
		t.Errorf("the upstream received %q, want %q", got, "ok0123456789")
	}
	for deadline := time.Now().Add(safety); u.resetCount() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) { // the upstream sees the reset too
			t.Fatal("the upstream connection was not reset")
		}
	}
}
