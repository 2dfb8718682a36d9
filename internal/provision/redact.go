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

// Redact returns text with every byte that lies inside an occurrence of a
// non-empty value of secrets masked: each maximal run of such bytes becomes
// one Mask. Overlapping or adjacent occurrences (of one secret or of several)
// are masked together, so no part of any of them survives. Every secret is
// masked whatever its length; a one-byte secret masks every such byte.
func Redact(text string, secrets map[string]string) string {
	r := newRedactor(secrets)
	if r.empty() {
		return text
	}
	out, _, _, _ := r.process(nil, []byte(text), nil, false, true)
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

// process appends buf to dst with secrets masked. known marks the bytes at
// the start of buf already known to lie in a secret (an occurrence that
// began in an earlier chunk); inMask says the byte before buf was masked, so
// a run continuing it gets no second Mask. Unless final, it stops at the
// first position where the rest of buf could still grow into a secret and
// returns that rest as carry, with what it knows of it (carryKnown) and
// whether the last byte written was masked.
func (r redactor) process(dst, buf []byte, known []bool, inMask, final bool) (out, carry []byte, carryKnown []bool, lastMasked bool) {
	covered := make([]bool, len(buf))
	copy(covered, known)
	for _, v := range r.values {
		end := 0 // covered[:end] is marked for v already
		for off := 0; off+len(v) <= len(buf); {
			i := bytes.Index(buf[off:], v)
			if i < 0 {
				break
			}
			s := off + i
			for j := max(s, end); j < s+len(v); j++ {
				covered[j] = true
			}
			end = s + len(v)
			off = s + 1 // occurrences of v may overlap each other
		}
	}
	cut := len(buf)
	if !final {
		cut = r.pending(buf)
	}
	for i := 0; i < cut; {
		if !covered[i] {
			j := i + 1
			for j < cut && !covered[j] {
				j++
			}
			dst = append(dst, buf[i:j]...)
			i = j
			continue
		}
		if !inMask || i > 0 {
			dst = append(dst, Mask...)
		}
		for i < cut && covered[i] {
			i++
		}
	}
	lastMasked = inMask
	if cut > 0 {
		lastMasked = covered[cut-1]
	}
	if cut == len(buf) {
		return dst, nil, nil, lastMasked
	}
	return dst, buf[cut:], covered[cut:], lastMasked
}

// pending returns where the incomplete end of buf begins: the first
// position from which the rest of buf is a proper prefix of some secret (so
// more input could complete an occurrence there), or len(buf).
func (r redactor) pending(buf []byte) int {
	longest := len(r.values[0])
	for s := max(0, len(buf)-longest+1); s < len(buf); s++ {
		if !r.first[buf[s]] {
			continue
		}
		rest := buf[s:]
		for _, v := range r.values {
			if len(rest) < len(v) && bytes.HasPrefix(v, rest) {
				return s
			}
		}
	}
	return len(buf)
}

// RedactingWriter writes to an underlying writer with every secret value
// masked as Redact does, including values split across Write calls: it holds
// back the end of a chunk while it could still be the start of a secret.
// Call Flush when the stream ends. It is safe for concurrent use.
type RedactingWriter struct {
	mu     sync.Mutex
	w      io.Writer
	r      redactor
	carry  []byte
	known  []bool // which bytes of carry lie in a secret already
	inMask bool   // the last byte written was masked
	err    error
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
	out, carry, known, inMask := rw.r.process(nil, buf, rw.known, rw.inMask, false)
	rw.carry = append([]byte(nil), carry...)
	rw.known = append([]bool(nil), known...)
	rw.inMask = inMask
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
	out, _, _, _ := rw.r.process(nil, rw.carry, rw.known, rw.inMask, true)
	rw.carry, rw.known, rw.inMask = nil, nil, false
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
