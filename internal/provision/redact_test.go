package provision

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		secrets map[string]string
		want    string
	}{
		{"no secrets", "hello", nil, "hello"},
		{"empty value ignored", "hello", map[string]string{"A": ""}, "hello"},
		{"one secret twice", "pw=s3cr3t; again s3cr3t.", map[string]string{"PW": "s3cr3t"}, "pw=[REDACTED]; again [REDACTED]."},
		{"longest first", "token abcdef", map[string]string{"A": "abc", "B": "abcdef"}, "token [REDACTED]"},
		{"overlapping, masked together", "xabcdy", map[string]string{"A": "abc", "B": "bcd"}, "x[REDACTED]y"},
		{"overlap, shorter first", "abcdef", map[string]string{"A": "ab", "B": "bcdef"}, "[REDACTED]"},
		{"overlap, longer first", "xabcdefy", map[string]string{"A": "abcd", "B": "def"}, "x[REDACTED]y"},
		{"inside another", "xabcdey", map[string]string{"A": "abcde", "B": "bcd"}, "x[REDACTED]y"},
		{"a secret overlapping itself", "aaaab", map[string]string{"A": "aaa"}, "[REDACTED]b"},
		{"adjacent occurrences", "abab cd", map[string]string{"A": "ab"}, "[REDACTED] cd"},
		{"multi-line value", "key:\nline1\nline2\nend", map[string]string{"K": "line1\nline2"}, "key:\n[REDACTED]\nend"},
		{"CR and newlines", "a\r\nb pw\r\nx\n", map[string]string{"K": "pw\r\nx"}, "a\r\nb [REDACTED]\n"},
		{"one byte", "a-b-c", map[string]string{"A": "-"}, "a[REDACTED]b[REDACTED]c"},
		{"prefix of a secret stays", "s3cr", map[string]string{"PW": "s3cr3t"}, "s3cr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Redact(tt.text, tt.secrets); got != tt.want {
				t.Errorf("Redact(%q) = %q, want %q", tt.text, got, tt.want)
			}
		})
	}
}

// writeChunks writes text to a RedactingWriter in the given pieces.
func writeChunks(t testing.TB, secrets map[string]string, chunks ...string) string {
	var out bytes.Buffer
	w := NewRedactingWriter(&out, secrets)
	for _, c := range chunks {
		if n, err := w.Write([]byte(c)); err != nil || n != len(c) {
			t.Fatalf("Write(%q) = %d, %v", c, n, err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestRedactingWriterEverySplit(t *testing.T) {
	secrets := map[string]string{"A": "hunter2", "B": "hun", "C": "2x\n"}
	text := "login: hunter2\nthen hun and hunter and 2x\n and hunter2x\n end"
	want := Redact(text, secrets)
	if want == text {
		t.Fatal("test text holds no secret")
	}
	for i := 0; i <= len(text); i++ {
		for j := i; j <= len(text); j++ {
			got := writeChunks(t, secrets, text[:i], text[i:j], text[j:])
			if got != want {
				t.Fatalf("split at %d,%d: got %q, want %q", i, j, got, want)
			}
		}
	}
}

func TestRedactingWriterByteByByte(t *testing.T) {
	secrets := map[string]string{"TOKEN": "ghp_0123456789"}
	text := "using ghp_0123456789 now; ghp_01234 is not it"
	var chunks []string
	for i := range len(text) {
		chunks = append(chunks, text[i:i+1])
	}
	got := writeChunks(t, secrets, chunks...)
	if want := "using [REDACTED] now; ghp_01234 is not it"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestRedactingWriterHoldsBackAPossibleSecret(t *testing.T) {
	var out bytes.Buffer
	w := NewRedactingWriter(&out, map[string]string{"PW": "s3cr3t"})
	_, _ = w.Write([]byte("pw is s3c"))
	if got := out.String(); got != "pw is " {
		t.Errorf("before the rest arrives: wrote %q, want %q", got, "pw is ")
	}
	_, _ = w.Write([]byte("r3t!"))
	_ = w.Flush()
	if got := out.String(); got != "pw is [REDACTED]!" {
		t.Errorf("got %q", got)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestRedactingWriterReportsWriteErrors(t *testing.T) {
	w := NewRedactingWriter(failingWriter{}, map[string]string{"PW": "x"})
	if _, err := w.Write([]byte("abc")); err == nil {
		t.Fatal("no error from a failing writer")
	}
	if _, err := w.Write([]byte("abc")); err == nil {
		t.Fatal("error forgotten")
	}
}

func TestTailBuffer(t *testing.T) {
	tb := newTailBuffer(16)
	_, _ = tb.Write([]byte("line one\nline two\nline three\n"))
	if got := tb.String(); got != "line three" {
		t.Errorf("got %q, want the last whole line", got)
	}
	small := newTailBuffer(100)
	_, _ = small.Write([]byte("a\nb\n"))
	if got := small.String(); got != "a\nb" {
		t.Errorf("got %q", got)
	}
}

// FuzzRedactingWriter checks that however output is chunked, the writer
// redacts exactly as Redact does on the whole text.
func FuzzRedactingWriter(f *testing.F) {
	f.Add("login: hunter2 hun", "hunter2", "hun", uint8(3), uint8(9))
	f.Add("aaaa", "aa", "a", uint8(1), uint8(2))
	f.Add("abcdef", "ab", "bcdef", uint8(1), uint8(4))
	f.Fuzz(func(t *testing.T, text, s1, s2 string, i, j uint8) {
		a, b := min(int(i), len(text)), min(int(j), len(text))
		if a > b {
			a, b = b, a
		}
		// A third secret cut from the text overlaps the chunk boundaries.
		secrets := map[string]string{"A": s1, "B": s2, "C": text[max(0, a-2):min(len(text), b+2)]}
		got := writeChunks(t, secrets, text[:a], text[a:b], text[b:])
		if want := Redact(text, secrets); got != want {
			t.Fatalf("chunks at %d,%d: got %q, want %q", a, b, got, want)
		}
	})
}

// FuzzRedact checks the redactor's promise: nothing of any secret survives.
//
// "Contains" needs care. The output holds Mask, and a secret may be a part of
// Mask ("RED") or be formed by Mask and the text next to it ("D]x"), so the
// property is checked on the pieces of the output between masks (Mask has no
// border, so splitting on it is exact): each piece must be a stretch of the
// text in which no byte lies inside an occurrence of any secret. That holds
// for every secret, whatever its length or content (a one-byte secret masks
// every such byte), and rules out partial leaks: with "ab" and "bcdef" over
// "abcdef" a piece "cdef" (or "def") is made of bytes of an occurrence of
// "bcdef". In particular no piece contains a secret. Two of the secrets are
// cut from the text itself, so that they occur (overlapping, across lines).
func FuzzRedact(f *testing.F) {
	f.Add("abcdef", "ab", "bcdef", uint8(0), uint8(0), uint8(0), uint8(0))
	f.Add("key:\nline1\r\nline2\nend", "line1\r\nline2", "", uint8(2), uint8(9), uint8(8), uint8(14))
	f.Add("xx[REDACTED]RED", "RED", "D]x", uint8(0), uint8(2), uint8(12), uint8(15))
	f.Add("aaaaab", "aa", "", uint8(1), uint8(4), uint8(3), uint8(6))
	f.Fuzz(func(t *testing.T, text, s1, s2 string, a, b, c, d uint8) {
		cut := func(i, j uint8) string {
			x, y := min(int(i), len(text)), min(int(j), len(text))
			return text[min(x, y):max(x, y)]
		}
		secrets := map[string]string{"A": s1, "B": s2, "C": cut(a, b), "D": cut(c, d)}
		got := Redact(text, secrets)
		var kept []string // the pieces of the output between masks
		for _, p := range strings.Split(got, Mask) {
			if p != "" {
				kept = append(kept, p)
			}
		}
		if want := outsideSecrets(text, secrets); !slices.Equal(kept, want) {
			t.Fatalf("Redact(%q, %q) = %q: kept %q, want only the text outside every secret, %q", text, secrets, got, kept, want)
		}
		for _, p := range kept {
			for _, s := range secrets {
				if s != "" && strings.Contains(p, s) {
					t.Fatalf("Redact(%q) = %q: secret %q survives", text, got, s)
				}
			}
		}
	})
}

// outsideSecrets returns the stretches of text that no occurrence of any
// non-empty secret touches, split further at any Mask they hold, without
// empty strings. It tries every position, the plainest way to find all
// occurrences.
func outsideSecrets(text string, secrets map[string]string) []string {
	in := make([]bool, len(text))
	for p := range len(text) {
		for _, s := range secrets {
			if s != "" && strings.HasPrefix(text[p:], s) {
				for j := p; j < p+len(s); j++ {
					in[j] = true
				}
			}
		}
	}
	var out []string
	for i := 0; i < len(text); {
		if in[i] {
			i++
			continue
		}
		j := i
		for j < len(text) && !in[j] {
			j++
		}
		for _, p := range strings.Split(text[i:j], Mask) {
			if p != "" {
				out = append(out, p)
			}
		}
		i = j
	}
	return out
}
