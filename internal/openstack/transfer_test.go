package openstack

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"
)

// stallIdle is the transfer idle timeout of these tests.
const stallIdle = 150 * time.Millisecond

func TestDownloadThatStopsArrivingStalls(t *testing.T) {
	f := newFakeCloud(t)
	f.mux.HandleFunc("GET /image/v2/images/i1/file", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "4096")
		_, _ = w.Write(make([]byte, 1000))
		http.NewResponseController(w).Flush()
		<-r.Context().Done() // then nothing more, until the client gives up
	})
	c := f.connect(t)
	c.transferIdle = stallIdle
	body, err := c.DownloadImage(t.Context(), "i1")
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	got, err := io.ReadAll(body)
	var se *StalledError
	if !errors.As(err, &se) || !IsTransient(err) || len(got) != 1000 {
		t.Fatalf("read %d bytes, err %v; want 1000 and a transient *StalledError", len(got), err)
	}
}

func TestDownloadReadSlowlyByUsIsNotAStall(t *testing.T) {
	f := newFakeCloud(t)
	f.mux.HandleFunc("GET /image/v2/images/i1/file", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(make([]byte, 3000))
	})
	c := f.connect(t)
	c.transferIdle = stallIdle
	body, err := c.DownloadImage(t.Context(), "i1")
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	first := make([]byte, 10)
	if _, err := io.ReadFull(body, first); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * stallIdle) // our side busy: the cloud is not waited on
	rest, err := io.ReadAll(body)
	if err != nil || len(rest) != 2990 {
		t.Fatalf("read %d more bytes, err %v; want the rest", len(rest), err)
	}
}

func TestUploadThatTheCloudStopsReadingStalls(t *testing.T) {
	f := newFakeCloud(t)
	// The server notices a client gone only by reading: let the test end it.
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // runs before the server's Close
	f.mux.HandleFunc("PUT /image/v2/images/i1/file", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.CopyN(io.Discard, r.Body, 64<<10)
		<-release // reads no more: the client's writes block once the socket buffers fill
	})
	c := f.connect(t)
	c.transferIdle = stallIdle
	err := c.UploadImage(t.Context(), "i1", bytes.NewReader(make([]byte, 64<<20)))
	var se *StalledError
	if !errors.As(err, &se) || !IsTransient(err) {
		t.Fatalf("err %v; want a transient *StalledError", err)
	}
}

// slowSource is a source that makes its reader wait once, as the spool does
// while the download has not written the bytes yet.
type slowSource struct {
	data  []byte
	delay time.Duration
	once  bool
}

func (s *slowSource) ReadAt(p []byte, off int64) (int, error) {
	if off > 0 && !s.once {
		s.once = true
		time.Sleep(s.delay)
	}
	if off >= int64(len(s.data)) {
		return 0, io.EOF
	}
	n := copy(p, s.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (s *slowSource) Read([]byte) (int, error)       { return 0, errors.New("use ReadAt") }
func (s *slowSource) Seek(int64, int) (int64, error) { return 0, nil }

func TestUploadWaitingOnItsSourceIsNotAStall(t *testing.T) {
	f := newFakeCloud(t)
	var got int64
	f.mux.HandleFunc("PUT /image/v2/images/i1/file", func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	})
	c := f.connect(t)
	c.transferIdle = stallIdle
	src := &slowSource{data: make([]byte, 1<<20), delay: 3 * stallIdle}
	if err := c.UploadImage(t.Context(), "i1", src); err != nil || got != 1<<20 {
		t.Fatalf("uploaded %d bytes, err %v; want all of them", got, err)
	}
}
