package builder

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// progress prints the long phases of a local build for a person watching a
// terminal: a line when a phase starts, one every progressEvery while it
// runs (with its elapsed time and detail, e.g. a percentage), and one when
// it ends. Lines, not a redrawn line, so that the warnings printed to the
// same terminal in between stay readable (on a terminal the CLI keeps the
// log's info records off it). A nil *progress prints nothing.
type progress struct {
	w      io.Writer
	ticker func() (<-chan time.Time, func())
	now    func() time.Time
	name   string // printed before each line ("" for none): the image, when cells build at once

	mu  sync.Mutex
	cur *phase
}

// Terminal returns f if it is a terminal, else nil: progress lines are
// for a person watching, not for a file or a pipe.
func Terminal(f *os.File) io.Writer {
	var t syscall.Termios
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TCGETS, uintptr(unsafe.Pointer(&t))); e != 0 {
		return nil
	}
	return f
}

// progressEvery is the interval of a running phase's progress lines.
const progressEvery = 15 * time.Second

// phaseLabel says which steps get progress lines, and what they say.
func phaseLabel(step string) (string, bool) {
	switch step {
	case "base image", "cloud-init", "script", "verify", "upload", "prune", "snapshot", "copy":
		return step, true
	case "server":
		return "boot: creating the builder server", true
	case "vm":
		return "boot: starting qemu", true
	case "ssh":
		return "boot: waiting for SSH", true
	case "power-off":
		return "power off", true
	case "shutdown":
		return "power off: waiting for the guest to stop", true
	case "export":
		return "compress", true
	}
	return "", false
}

// newProgress returns a progress printer to w, or nil (print nothing) when
// w is nil (not a terminal: a pipe, a file, a journal). ticker makes the
// interval's ticks, nil meaning a real ticker; now is the clock of the
// elapsed times and rates, nil meaning time.Now.
func newProgress(w io.Writer, ticker func() (<-chan time.Time, func()), now func() time.Time) *progress {
	if w == nil {
		return nil
	}
	if now == nil {
		now = time.Now
	}
	if ticker == nil {
		ticker = func() (<-chan time.Time, func()) {
			t := time.NewTicker(progressEvery)
			return t.C, t.Stop
		}
	}
	return &progress{w: w, ticker: ticker, now: now}
}

// printf prints one line.
func (p *progress) printf(format string, args ...any) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.name != "" {
		format = "[" + p.name + "] " + format
	}
	fmt.Fprintf(p.w, format+"\n", args...)
}

// observe prints the progress lines of the steps that have a label, from
// the step runner's events (use it as an Observer; a nil p ignores them).
func (p *progress) observe(ev Event) {
	if p == nil {
		return
	}
	label, ok := phaseLabel(ev.Step)
	if !ok {
		return
	}
	switch ev.Kind {
	case StepStarted:
		p.start(label)
	case StepEnded:
		if ph := p.current(); ph != nil && ph.label == label {
			ph.end(ev.Err)
		}
	}
}

// phase is one running phase.
type phase struct {
	p      *progress
	label  string
	start  time.Time
	mu     sync.Mutex
	detail func() string // shown on each periodic line
	final  func() string // shown on the "done" line
	stop   chan struct{}
	done   chan struct{}
}

// start prints the phase's first line and its periodic lines until end.
func (p *progress) start(label string) *phase {
	if p == nil {
		return nil
	}
	ph := &phase{p: p, label: label, start: p.now(), stop: make(chan struct{}), done: make(chan struct{})}
	p.mu.Lock()
	p.cur = ph
	p.mu.Unlock()
	p.printf("==> %s", label)
	ticks, stopTicks := p.ticker()
	go func() {
		defer close(ph.done)
		defer stopTicks()
		for {
			select {
			case <-ph.stop:
				return
			case <-ticks:
				line := fmt.Sprintf("    %s: %s", label, elapsed(p.now().Sub(ph.start)))
				if d := ph.getDetail(); d != "" {
					line += ", " + d
				}
				p.printf("%s", line)
			}
		}
	}()
	return ph
}

// current is the phase running now, or nil.
func (p *progress) current() *phase {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur
}

// set records the phase's detail (shown on its next line).
func (ph *phase) set(detail string) {
	if ph == nil {
		return
	}
	ph.mu.Lock()
	ph.detail = func() string { return detail }
	ph.mu.Unlock()
}

func (ph *phase) getDetail() string {
	ph.mu.Lock()
	d := ph.detail
	ph.mu.Unlock()
	if d == nil {
		return ""
	}
	return d()
}

// meter makes the phase's lines show the bytes a copy has sent out of total
// (0: unknown) and its mean rate; the "done" line shows the bytes and rate
// of the whole phase. The copy reads its data through the meter's reader.
// A nil phase gives a nil meter, whose reader counts nothing.
func (ph *phase) meter(total int64) *meter {
	if ph == nil {
		return nil
	}
	m := &meter{now: ph.p.now, start: ph.p.now(), total: total}
	ph.mu.Lock()
	ph.detail, ph.final = m.progress, m.summary
	ph.mu.Unlock()
	return m
}

// meter counts the bytes read through its readers since start.
type meter struct {
	now   func() time.Time
	start time.Time
	total int64
	n     atomic.Int64
}

// progress is "1.5 MiB of 3.0 MiB, 512.0 KiB/s".
func (m *meter) progress() string {
	s := bytesIEC(m.n.Load())
	if m.total > 0 {
		s += " of " + bytesIEC(m.total)
	}
	if r := m.rate(); r != "" {
		s += ", " + r
	}
	return s
}

// summary is "3.0 MiB at 512.0 KiB/s".
func (m *meter) summary() string {
	s := bytesIEC(m.n.Load())
	if r := m.rate(); r != "" {
		s += " at " + r
	}
	return s
}

// rate is the mean rate since start, or "" before any time has passed.
func (m *meter) rate() string {
	d := m.now().Sub(m.start)
	if d <= 0 {
		return ""
	}
	return bytesIEC(int64(float64(m.n.Load())/d.Seconds())) + "/s"
}

// reader returns r counting what is read from it (by Read or ReadAt: an
// upload of a file reads at offsets). A nil meter returns r.
func (m *meter) reader(r io.ReadSeeker) io.ReadSeeker {
	if m == nil {
		return r
	}
	return &meteredReader{r: r, m: m}
}

type meteredReader struct {
	r io.ReadSeeker
	m *meter
}

func (c *meteredReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.m.n.Add(int64(n))
	return n, err
}

func (c *meteredReader) Seek(off int64, whence int) (int64, error) { return c.r.Seek(off, whence) }

// ReadAt reads at an offset when the underlying reader can (else it seeks
// and reads, which is what a reader without ReadAt gets anyway).
func (c *meteredReader) ReadAt(p []byte, off int64) (int, error) {
	var n int
	var err error
	if ra, ok := c.r.(io.ReaderAt); ok {
		n, err = ra.ReadAt(p, off)
	} else if _, err = c.r.Seek(off, io.SeekStart); err == nil {
		n, err = io.ReadFull(c.r, p)
		if err == io.ErrUnexpectedEOF {
			err = io.EOF
		}
	}
	c.m.n.Add(int64(n))
	return n, err
}

// bytesIEC prints a byte count in binary units: 512 B, 1.5 KiB, 3.0 GiB.
func bytesIEC(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, unit := float64(n)/1024, "KiB"
	for _, u := range []string{"MiB", "GiB", "TiB"} {
		if v < 1024 {
			break
		}
		v, unit = v/1024, u
	}
	return fmt.Sprintf("%.1f %s", v, unit)
}

// end stops the periodic lines and prints how the phase ended.
func (ph *phase) end(err error) {
	if ph == nil {
		return
	}
	close(ph.stop)
	<-ph.done
	p := ph.p
	p.mu.Lock()
	if p.cur == ph {
		p.cur = nil
	}
	p.mu.Unlock()
	took := elapsed(p.now().Sub(ph.start))
	ph.mu.Lock()
	final := ph.final
	ph.mu.Unlock()
	if err != nil {
		p.printf("    %s: failed after %s", ph.label, took)
		return
	}
	if final != nil {
		p.printf("    %s: done in %s, %s", ph.label, took, final())
		return
	}
	p.printf("    %s: done in %s", ph.label, took)
}

// elapsed prints a duration as m:ss (h:mm:ss from an hour on).
func elapsed(d time.Duration) string {
	s := int(d.Round(time.Second) / time.Second)
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}
