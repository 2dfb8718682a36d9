package testenv

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// ServeScript serves body at /script.sh on 127.0.0.1 for the test's
// lifetime and returns its URL (a --script-url: the builder host fetches
// it, the guest never sees the URL).
func ServeScript(t testing.TB, body string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/script.sh" {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, body)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + l.Addr().String() + "/script.sh"
}
