package openstack

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// A token that expires in the middle of an upload: Glance answers 401 after
// reading part of the body; gophercloud re-authenticates and sends again.
// The second send must carry the whole file, and the caller's file must stay
// open and usable (net/http closes request bodies).
func TestUploadImageResendsWholeFileAfter401(t *testing.T) {
	f := newFakeCloud(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	path := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	var got []byte
	f.mux.HandleFunc("PUT /image/v2/images/i1/file", func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			_, _ = io.CopyN(io.Discard, r.Body, 100<<10) // part of it, then the token "expires"
			http.Error(w, `{"error": {"code": 401, "message": "expired"}}`, http.StatusUnauthorized)
			return
		}
		got, _ = io.ReadAll(r.Body)
		w.WriteHeader(http.StatusNoContent)
	})
	file, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	if err := f.connect(t).UploadImage(context.Background(), "i1", file); err != nil {
		t.Fatalf("upload: %v", err)
	}
	if calls.Load() != 2 {
		t.Errorf("%d PUTs, want 2 (one refused, one re-sent)", calls.Load())
	}
	if !bytes.Equal(got, data) {
		t.Errorf("re-sent %d bytes, want the whole %d", len(got), len(data))
	}
	if _, err := file.Seek(0, io.SeekStart); err != nil {
		t.Errorf("the caller's file was closed by the upload: %v", err)
	}
}

func TestUploadBodyRewindWaitsForClose(t *testing.T) {
	b := newUploadBody(bytes.NewReader([]byte("abcdef")))
	p := make([]byte, 3)
	if n, _ := b.Read(p); n != 3 || string(p) != "abc" {
		t.Fatalf("read %q", p[:n])
	}
	rewound := make(chan struct{})
	go func() {
		if _, err := b.Seek(0, io.SeekStart); err != nil {
			t.Errorf("seek: %v", err)
		}
		close(rewound)
	}()
	select {
	case <-rewound:
		t.Fatal("rewound while the send still held the body")
	default:
	}
	_ = b.Close()
	<-rewound
	all, err := io.ReadAll(b)
	if err != nil || string(all) != "abcdef" {
		t.Errorf("after rewind read %q, %v", all, err)
	}
	if _, err := b.Seek(2, io.SeekStart); err == nil {
		t.Error("seek to a non-zero offset accepted")
	}
}
