package builder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"testing/synctest"
)

func testSpool(t *testing.T) *spool {
	t.Helper()
	sp, err := newSpool(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sp.Close() })
	return sp
}

func write(t *testing.T, sp *spool, s string) {
	t.Helper()
	if n, err := sp.Write([]byte(s)); n != len(s) || err != nil {
		t.Fatalf("Write(%q) = %d, %v", s, n, err)
	}
}

// readResult is what one read returned.
type readResult struct {
	data string
	err  error
}

// startRead runs read in a goroutine; its result arrives on the channel.
func startRead(read func() (string, error)) <-chan readResult {
	ch := make(chan readResult, 1)
	go func() {
		s, err := read()
		ch <- readResult{s, err}
	}()
	return ch
}

func readAt(r io.ReaderAt, off int64, n int) func() (string, error) {
	return func() (string, error) {
		p := make([]byte, n)
		m, err := r.ReadAt(p, off)
		return string(p[:m]), err
	}
}

func readAll(r io.Reader) func() (string, error) {
	return func() (string, error) {
		b, err := io.ReadAll(r)
		return string(b), err
	}
}

// done reports the read's result if it has returned.
func done(ch <-chan readResult) (readResult, bool) {
	select {
	case r := <-ch:
		return r, true
	default:
		return readResult{}, false
	}
}

// Readers that start before any byte is written each return once the bytes
// they need are there (ReadAt: all of them; Read: some) or, at the end of a
// finished spool, with io.EOF.
func TestSpoolReadersWaitForBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sp := testSpool(t)
		ctx := context.Background()
		type pending struct {
			name     string
			ch       <-chan readResult
			readyAt  int // returns after this write (1-based), 0: only once finished
			want     string
			wantEOF  bool
			returned bool
		}
		r := sp.reader(ctx)
		reads := []*pending{
			{name: "ReadAt 0+6", ch: startRead(readAt(r, 0, 6)), readyAt: 1, want: "hello "},
			{name: "ReadAt 6+4", ch: startRead(readAt(r, 6, 4)), readyAt: 2, want: "worl"},
			{name: "ReadAt 8+10", ch: startRead(readAt(r, 8, 10)), want: "rld", wantEOF: true},
			{name: "ReadAt 11+1", ch: startRead(readAt(r, 11, 1)), wantEOF: true},
			{name: "ReadAt 20+1", ch: startRead(readAt(r, 20, 1)), wantEOF: true},
			{name: "ReadAll", ch: startRead(readAll(sp.reader(ctx))), want: "hello world"},
		}
		writes := []string{"hello ", "world"}
		check := func(step int, finished bool) {
			t.Helper()
			synctest.Wait() // every reader has returned or is blocked
			for _, p := range reads {
				if p.returned {
					continue
				}
				res, ok := done(p.ch)
				wantDone := finished || (p.readyAt > 0 && step >= p.readyAt)
				if ok != wantDone {
					t.Fatalf("after write %d (finished %v): %s returned=%v, want %v", step, finished, p.name, ok, wantDone)
				}
				if !ok {
					continue
				}
				p.returned = true
				if res.data != p.want || (res.err == io.EOF) != p.wantEOF || (res.err != nil && res.err != io.EOF) {
					t.Errorf("%s = %q, %v; want %q, EOF %v", p.name, res.data, res.err, p.want, p.wantEOF)
				}
			}
		}
		check(0, false)
		for i, w := range writes {
			write(t, sp, w)
			check(i+1, false)
		}
		sp.finish(nil)
		check(len(writes), true)
		if _, err := sp.Write([]byte("more")); err == nil {
			t.Error("Write after finish succeeded")
		}
	})
}

// A failure ends every read, waiting or to come, with the failure, even of
// bytes the spool holds.
func TestSpoolFailWakesReaders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sp := testSpool(t)
		r := sp.reader(context.Background())
		write(t, sp, "abc")
		waiting := []<-chan readResult{startRead(readAt(r, 0, 10)), startRead(readAll(sp.reader(context.Background())))}
		synctest.Wait()
		boom := errors.New("boom")
		sp.finish(boom)
		sp.finish(nil) // the first call counts
		synctest.Wait()
		for i, ch := range waiting {
			res, ok := done(ch)
			if !ok || !errors.Is(res.err, boom) {
				t.Errorf("waiting read %d: returned %v with %q, %v; want boom", i, ok, res.data, res.err)
			}
		}
		if n, err := r.ReadAt(make([]byte, 2), 0); !errors.Is(err, boom) {
			t.Errorf("ReadAt of held bytes after the failure = %d, %v; want boom", n, err)
		}
		if _, err := r.Seek(0, io.SeekEnd); err == nil {
			t.Error("Seek to the end of a failed spool succeeded")
		}
	})
}

// A reader's context ending wakes that reader only; Close wakes the rest.
func TestSpoolContextAndCloseWakeReaders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sp, err := newSpool(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		mine := startRead(readAt(sp.reader(ctx), 0, 1))
		other := startRead(readAll(sp.reader(context.Background())))
		synctest.Wait()
		cancel()
		synctest.Wait()
		if res, ok := done(mine); !ok || !errors.Is(res.err, context.Canceled) {
			t.Errorf("reader whose context ended: returned %v, %v; want context.Canceled", ok, res.err)
		}
		if _, ok := done(other); ok {
			t.Fatal("another reader returned when the first one's context ended")
		}
		if err := sp.Close(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if res, ok := done(other); !ok || !errors.Is(res.err, errSpoolClosed) {
			t.Errorf("reader of a closed spool: returned %v, %v; want errSpoolClosed", ok, res.err)
		}
	})
}

func TestSpoolFile(t *testing.T) {
	sp := testSpool(t)
	fi, err := os.Stat(sp.Name())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("spool file mode %v, want 0600", fi.Mode().Perm())
	}
	write(t, sp, "0123456789")
	sp.finish(nil)
	if got, err := os.ReadFile(sp.Name()); string(got) != "0123456789" || err != nil {
		t.Errorf("file holds %q, %v", got, err)
	}
}

func TestSpoolReaderSeek(t *testing.T) {
	sp := testSpool(t)
	write(t, sp, "0123456789")
	tests := []struct {
		name    string
		offset  int64
		whence  int
		finish  bool
		want    int64
		wantErr bool
		next    string // what Read gives next
	}{
		{"start", 3, io.SeekStart, false, 3, false, "3456789"},
		{"current", 2, io.SeekCurrent, false, 7, false, "789"},
		{"end before finish", -2, io.SeekEnd, false, 0, true, ""},
		{"end", -2, io.SeekEnd, true, 8, false, "89"},
		{"negative", -20, io.SeekCurrent, true, 0, true, ""},
		{"bad whence", 0, 7, true, 0, true, ""},
	}
	r := sp.reader(context.Background())
	if _, err := r.Seek(5, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.finish {
				sp.finish(nil)
			}
			if _, err := r.Seek(5, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			got, err := r.Seek(tt.offset, tt.whence)
			if (err != nil) != tt.wantErr || (err == nil && got != tt.want) {
				t.Fatalf("Seek(%d, %d) = %d, %v; want %d, error %v", tt.offset, tt.whence, got, err, tt.want, tt.wantErr)
			}
			if tt.next == "" || !tt.finish {
				return
			}
			if rest, err := io.ReadAll(r); string(rest) != tt.next || err != nil {
				t.Errorf("then read %q, %v; want %q", rest, err, tt.next)
			}
		})
	}
}

// One writer appends in chunks of varied sizes while readers read at random
// offsets and to the end, concurrently (run with -race): every reader sees
// exactly the bytes written.
func TestSpoolConcurrentReaders(t *testing.T) {
	sp := testSpool(t)
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 3<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for i := range 4 {
		wg.Go(func() {
			got, err := io.ReadAll(sp.reader(ctx))
			if err != nil || !bytes.Equal(got, data) {
				errc <- fmt.Errorf("reader %d: %d bytes, %v", i, len(got), err)
			}
		})
		wg.Go(func() {
			r := sp.reader(ctx)
			rng := rand.New(rand.NewPCG(uint64(i), 9))
			for range 200 {
				off := rng.Int64N(int64(len(data)))
				p := make([]byte, 1+rng.IntN(100<<10))
				n, err := r.ReadAt(p, off)
				want := data[off:min(int64(len(data)), off+int64(len(p)))]
				if !bytes.Equal(p[:n], want) || (n < len(p)) != (err == io.EOF) || (err != nil && err != io.EOF) {
					errc <- fmt.Errorf("ReadAt(%d bytes, %d) = %d, %v", len(p), off, n, err)
					return
				}
			}
		})
	}
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 1+rng.IntN(64<<10))
		if _, err := sp.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	sp.finish(nil)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}
