package builder

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// progress prints the long phases of a local build for a person watching a
// terminal: a line when a phase starts, one every progressEvery while it
// runs (with its elapsed time and detail, e.g. a percentage), and one when
// it ends. Lines, not a redrawn line, so that log records printed to the
// same terminal in between stay readable. A nil *progress prints nothing.
type progress struct {
	w      io.Writer
	ticker func() (<-chan time.Time, func())

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
	case "base image", "cloud-init", "script", "verify", "upload", "prune":
		return step, true
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
// w is nil or the logs are JSON (machine-read: a person is not watching).
// ticker makes the interval's ticks; nil means a real ticker.
func newProgress(w io.Writer, log *slog.Logger, ticker func() (<-chan time.Time, func())) *progress {
	if w == nil {
		return nil
	}
	if log != nil {
		if _, isJSON := log.Handler().(*slog.JSONHandler); isJSON {
			return nil
		}
	}
	if ticker == nil {
		ticker = func() (<-chan time.Time, func()) {
			t := time.NewTicker(progressEvery)
			return t.C, t.Stop
		}
	}
	return &progress{w: w, ticker: ticker}
}

// printf prints one line.
func (p *progress) printf(format string, args ...any) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
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
	detail string
	stop   chan struct{}
	done   chan struct{}
}

// start prints the phase's first line and its periodic lines until end.
func (p *progress) start(label string) *phase {
	if p == nil {
		return nil
	}
	ph := &phase{p: p, label: label, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
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
				line := fmt.Sprintf("    %s: %s", label, elapsed(time.Since(ph.start)))
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
	ph.detail = detail
	ph.mu.Unlock()
}

func (ph *phase) getDetail() string {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	return ph.detail
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
	if err != nil {
		p.printf("    %s: failed after %s", ph.label, elapsed(time.Since(ph.start)))
		return
	}
	p.printf("    %s: done in %s", ph.label, elapsed(time.Since(ph.start)))
}

// elapsed prints a duration as m:ss (h:mm:ss from an hour on).
func elapsed(d time.Duration) string {
	s := int(d.Round(time.Second) / time.Second)
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}
