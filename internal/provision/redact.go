package provision

import (
	"bytes"
	"io"
	"sort"
	"strings"
	"sync"
)

// Mask replaces every secret value in redacted text.
const Mask = "[REDACTED]"

// Redact returns text with every non-empty value of secrets replaced by Mask.
// Where two secrets overlap, the longest one starting first wins.
func Redact(text string, secrets map[string]string) string {
	r := newRedactor(secrets)
	if r.empty() {
		return text
	}
	out, _ := r.process(nil, []byte(text), true)
	return string(out)
}

// redactor holds the secret values, longest first.
type redactor struct {
	values [][]byte
	first  [256]bool // first bytes of the values, to skip positions quickly
}

func newRedactor(secrets map[string]string) redactor {
	var r redactor
	for _, v := range secrets {
		if v == "" {
			continue
		}
		r.values = append(r.values, []byte(v))
		r.first[v[0]] = true
	}
	sort.Slice(r.values, func(i, j int) bool { return len(r.values[i]) > len(r.values[j]) })
	return r
}

func (r redactor) empty() bool { return len(r.values) == 0 }

// process appends buf to dst with secrets masked. Unless final, it stops at
// the first position where the rest of buf could still grow into a secret and
// returns that rest as carry, to be prepended to the next chunk.
func (r redactor) process(dst, buf []byte, final bool) (out, carry []byte) {
	i := 0
	for i < len(buf) {
		if !r.first[buf[i]] {
			// Copy the run of bytes that cannot start a secret in one go.
			j := i + 1
			for j < len(buf) && !r.first[buf[j]] {
				j++
			}
			dst = append(dst, buf[i:j]...)
			i = j
			continue
		}
		rest := buf[i:]
		// Wait for more input while rest could still grow into a secret, even
		// if a shorter one matches already: the longer one must win.
		if !final && r.couldStart(rest) {
			return dst, rest
		}
		if n := r.matchAt(rest); n > 0 {
			dst = append(dst, Mask...)
			i += n
			continue
		}
		dst = append(dst, buf[i])
		i++
	}
	return dst, nil
}

// matchAt returns the length of the longest secret that rest starts with.
func (r redactor) matchAt(rest []byte) int {
	for _, v := range r.values {
		if bytes.HasPrefix(rest, v) {
			return len(v)
		}
	}
	return 0
}

// couldStart reports whether rest is a proper prefix of some secret, so more
// input could complete it.
func (r redactor) couldStart(rest []byte) bool {
	for _, v := range r.values {
		if len(rest) < len(v) && bytes.HasPrefix(v, rest) {
			return true
		}
	}
	return false
}

// RedactingWriter writes to an underlying writer with every secret value
// replaced by Mask, including values split across Write calls: it holds back
// the end of a chunk while it could still be the start of a secret. Call Flush
// when the stream ends. It is safe for concurrent use.
type RedactingWriter struct {
	mu    sync.Mutex
	w     io.Writer
	r     redactor
	carry []byte
	err   error
}

// NewRedactingWriter returns a writer that redacts secrets' values before
// writing to w.
func NewRedactingWriter(w io.Writer, secrets map[string]string) *RedactingWriter {
	return &RedactingWriter{w: w, r: newRedactor(secrets)}
}

// Write redacts p and writes what is known to be complete. It reports len(p)
// on success even when part of p is held back.
func (rw *RedactingWriter) Write(p []byte) (int, error) {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.err != nil {
		return 0, rw.err
	}
	if rw.r.empty() {
		if _, err := rw.w.Write(p); err != nil {
			rw.err = err
			return 0, err
		}
		return len(p), nil
	}
	buf := append(rw.carry, p...)
	out, carry := rw.r.process(nil, buf, false)
	rw.carry = append([]byte(nil), carry...)
	if len(out) > 0 {
		if _, err := rw.w.Write(out); err != nil {
			rw.err = err
			return 0, err
		}
	}
	return len(p), nil
}

// Flush writes whatever was held back, redacted. Call it once the stream ends.
func (rw *RedactingWriter) Flush() error {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.err != nil || len(rw.carry) == 0 {
		return rw.err
	}
	out, _ := rw.r.process(nil, rw.carry, true)
	rw.carry = nil
	if _, err := rw.w.Write(out); err != nil {
		rw.err = err
	}
	return rw.err
}

// tailBuffer keeps the last max bytes written to it; it is safe for
// concurrent use.
type tailBuffer struct {
	mu        sync.Mutex
	max       int
	buf       []byte
	truncated bool
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.truncated = true
	}
	return len(p), nil
}

// String returns the kept bytes, trimmed, starting at a line boundary when the
// buffer was truncated.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := string(t.buf)
	if t.truncated {
		if i := strings.IndexByte(s, '\n'); i >= 0 && i < len(s)-1 {
			s = s[i+1:]
		}
	}
	return strings.TrimSpace(s)
}
