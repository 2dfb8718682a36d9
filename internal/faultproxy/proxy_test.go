package faultproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// safety bounds a test's wait for something that should happen at once;
// it only turns a hang into a failure, it times nothing.
const safety = 30 * time.Second

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(safety):
		t.Fatalf("gave up waiting for %s", what)
	}
}

// upstreams is a fake OpenStack on loopback: a Keystone whose token
// responses carry a catalog naming a compute and an image service, and
// those two services. The services answer with what they saw.
type upstreams struct {
	keystone, compute, image *httptest.Server
	tokens                   int // token requests Keystone answered
	mu                       sync.Mutex
}

func newUpstreams(t *testing.T, compute, image http.Handler) *upstreams {
	t.Helper()
	u := &upstreams{}
	if compute == nil {
		compute = echo()
	}
	if image == nil {
		image = echo()
	}
	u.compute = httptest.NewServer(compute)
	u.image = httptest.NewServer(image)
	u.keystone = httptest.NewServer(http.HandlerFunc(u.serveKeystone))
	t.Cleanup(func() {
		u.keystone.Close()
		u.compute.Close()
		u.image.Close()
	})
	return u
}

func (u *upstreams) serveKeystone(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v3/auth/tokens" {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	u.mu.Lock()
	u.tokens++
	u.mu.Unlock()
	ep := func(iface, url string) map[string]any { return map[string]any{"interface": iface, "url": url} }
	body, _ := json.Marshal(map[string]any{"token": map[string]any{
		"expires_at": "2099-01-01T00:00:00Z",
		"catalog": []any{
			map[string]any{"type": "compute", "endpoints": []any{
				ep("public", u.compute.URL+"/v2.1"), ep("internal", u.compute.URL+"/v2.1"),
			}},
			map[string]any{"type": "image", "endpoints": []any{ep("public", u.image.URL)}},
			map[string]any{"type": "identity", "endpoints": []any{ep("public", u.keystone.URL+"/v3")}},
		},
	}})
	w.Header().Set("X-Subject-Token", "tok")
	w.Header().Set("Content-Type", "application/json")
	if r.Method == http.MethodPost {
		w.WriteHeader(http.StatusCreated)
	}
	_, _ = w.Write(body)
}

// echo answers "<method> <path> host=<Host> body=<n bytes>".
func echo() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%s %s host=%s body=%d", r.Method, r.URL.Path, r.Host, n)
	})
}

func newProxy(t *testing.T, upstream string) *Proxy {
	t.Helper()
	p, err := New(upstream)
	if err != nil {
		t.Fatalf("New(%q): %v", upstream, err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

// requests waits for the requests in flight and returns the log.
func requests(t *testing.T, p *Proxy) []Request {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	defer cancel()
	if err := p.Idle(ctx); err != nil {
		t.Fatal(err)
	}
	return p.Requests()
}

// catalog authenticates through p and returns the first URL of each service type.
func catalog(t *testing.T, p *Proxy) map[string]string {
	t.Helper()
	resp, err := http.Post(p.AuthURL()+"/auth/tokens", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatalf("token request: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("token request: %s: %s", resp.Status, b)
	}
	var doc struct {
		Token struct {
			Catalog []struct {
				Type      string
				Endpoints []struct{ URL string }
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatalf("token response: %v", err)
	}
	urls := map[string]string{}
	for _, e := range doc.Token.Catalog {
		for _, ep := range e.Endpoints {
			if prev, ok := urls[e.Type]; ok && prev != ep.URL {
				t.Errorf("%s: endpoints of one upstream got different proxy URLs: %s, %s", e.Type, prev, ep.URL)
			}
			urls[e.Type] = ep.URL
		}
	}
	return urls
}

func get(t *testing.T, rawURL string) (int, string) {
	t.Helper()
	resp, err := http.Get(rawURL)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: body: %v", rawURL, err)
	}
	return resp.StatusCode, string(b)
}

func mustAdd(t *testing.T, p *Proxy, r Rule) *Handle {
	t.Helper()
	h, err := p.Add(r)
	if err != nil {
		t.Fatalf("Add(%+v): %v", r, err)
	}
	return h
}

func TestNew(t *testing.T) {
	tests := []struct {
		upstream string
		authPath string // "" when New must refuse
	}{
		{"http://127.0.0.1:5000/v3", "/v3"},
		{"http://127.0.0.1:5000/v3/", "/v3"},
		{"http://127.0.0.1:5000", "/v3"},
		{"http://127.9.8.7:5000/identity/v3", "/identity/v3"},
		{"http://localhost:5000/v3", "/v3"},
		{"http://[::1]:5000/v3", "/v3"},
		{"http://10.0.0.1:5000/v3", ""},
		{"http://192.0.2.1/v3", ""},
		{"http://keystone.example.com:5000/v3", ""},
		{"http://[2001:db8::1]:5000/v3", ""},
		{"https://127.0.0.1:5000/v3", ""},
		{"127.0.0.1:5000", ""},
		{"http://user:pw@127.0.0.1:5000/v3", ""},
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.upstream, func(t *testing.T) {
			p, err := New(tt.upstream)
			if tt.authPath == "" {
				if err == nil {
					p.Close()
					t.Fatalf("New accepted %q", tt.upstream)
				}
				if k := errs.KindOf(err); k != errs.KindUsage {
					t.Errorf("error kind %v, want usage: %v", k, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			defer p.Close()
			u, err := url.Parse(p.AuthURL())
			if err != nil {
				t.Fatal(err)
			}
			if host := u.Hostname(); host != "127.0.0.1" || u.Path != tt.authPath || u.Port() == "" {
				t.Errorf("AuthURL %q: want http://127.0.0.1:<port>%s", p.AuthURL(), tt.authPath)
			}
			if !strings.HasPrefix(p.AuthURL(), p.URL()) {
				t.Errorf("AuthURL %q is not under URL %q", p.AuthURL(), p.URL())
			}
		})
	}
}

func TestCatalogRoutesEveryServiceThroughTheProxy(t *testing.T) {
	up := newUpstreams(t, nil, nil)
	p := newProxy(t, up.keystone.URL+"/v3")
	urls := catalog(t, p)

	for service, upstream := range map[string]string{
		Compute: up.compute.URL, Image: up.image.URL, Identity: up.keystone.URL,
	} {
		u, err := url.Parse(urls[service])
		if err != nil {
			t.Fatalf("%s: %v", service, err)
		}
		if u.Hostname() != "127.0.0.1" || "http://"+u.Host == upstream {
			t.Errorf("%s endpoint %q does not point at the proxy", service, urls[service])
		}
	}
	if got, want := urls[Identity], p.AuthURL(); got != want {
		t.Errorf("identity endpoint %q, want the AuthURL %q", got, want)
	}

	computeHost := strings.TrimPrefix(strings.TrimSuffix(urls[Compute], "/v2.1"), "http://")
	status, body := get(t, urls[Compute]+"/servers/detail?limit=2")
	if want := "GET /v2.1/servers/detail host=" + computeHost + " body=0"; status != 200 || body != want {
		t.Errorf("compute through the proxy: %d %q, want 200 %q", status, body, want)
	}
	status, body = get(t, urls[Image]+"/v2/images")
	if status != 200 || !strings.HasPrefix(body, "GET /v2/images ") {
		t.Errorf("image through the proxy: %d %q", status, body)
	}

	// A token check (GET) is rewritten as well, and reuses the listeners.
	req, _ := http.NewRequest(http.MethodGet, p.AuthURL()+"/auth/tokens", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), urls[Compute]) || strings.Contains(string(b), up.compute.URL) {
		t.Errorf("GET token response not rewritten: %s", b)
	}

	var got []string
	for _, r := range requests(t, p) {
		got = append(got, fmt.Sprintf("%s %s %s %d", r.Service, r.Method, r.Path, r.Status))
	}
	want := []string{
		"identity POST /v3/auth/tokens 201",
		"compute GET /v2.1/servers/detail 200",
		"image GET /v2/images 200",
		"identity GET /v3/auth/tokens 200",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("request log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	p.ClearRequests()
	if n := len(p.Requests()); n != 0 {
		t.Errorf("after ClearRequests: %d entries", n)
	}
}

func TestCatalogWithForeignEndpointIsRefused(t *testing.T) {
	keystone := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"token":{"catalog":[{"type":"compute","endpoints":[{"url":"http://192.0.2.7:8774/v2.1"}]}]}}`)
	}))
	defer keystone.Close()
	p := newProxy(t, keystone.URL)
	resp, err := http.Post(p.AuthURL()+"/auth/tokens", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(b), "not on loopback") {
		t.Errorf("got %s %s, want 502 naming the non-loopback endpoint", resp.Status, b)
	}
	if strings.Contains(string(b), `"url"`) {
		t.Errorf("the unrewritten catalog leaked to the client: %s", b)
	}
}

func TestUpstreamDownGives502(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	p := newProxy(t, "http://"+addr+"/v3")
	status, body := get(t, p.AuthURL())
	if status != http.StatusBadGateway || !strings.Contains(body, `"code":502`) {
		t.Errorf("got %d %s, want 502 with a JSON error", status, body)
	}
}

func TestLoopbackOnlyDialer(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:80": true, "127.1.2.3:5000": true, "[::1]:80": true,
		"10.0.0.1:80": false, "[2001:db8::1]:80": false, "0.0.0.0:80": false, "nonsense": false,
	} {
		if err := loopbackOnly("tcp", addr, nil); (err == nil) != ok {
			t.Errorf("loopbackOnly(%q) = %v, want allowed=%v", addr, err, ok)
		}
	}
}

// isReset reports whether err is the client's view of a TCP reset.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// isBrokenUpload reports whether err is the client's view of a reset while
// it was still sending a body: ECONNRESET or EPIPE, or, when Go's Transport
// saw the reset on its reading side first and closed the connection under
// its writer, net.ErrClosed.
func isBrokenUpload(err error) bool {
	return isReset(err) || errors.Is(err, net.ErrClosed)
}

func TestFaults(t *testing.T) {
	const bodySize = 1 << 20
	tests := []struct {
		name  string
		fault Fault
		// a request with a body of bodySize bytes when post is set
		post bool
		// expectations
		wantStatus   int    // 0: no response at all
		wantInBody   string // for a response
		wantUpstream bool   // the upstream saw the request
		wantResetErr bool   // the request fails with ECONNRESET/EPIPE
	}{
		{name: "503", fault: Status(503), wantStatus: 503, wantInBody: `"code":503`},
		{name: "500", fault: Status(500), wantStatus: 500, wantInBody: `"title":"Internal Server Error"`},
		{name: "401", fault: Unauthorized(), wantStatus: 401, wantInBody: `"code":401`},
		{name: "401 mid-upload", fault: StatusAfter(401, 64<<10), post: true, wantStatus: 401},
		{name: "reset", fault: Reset(), wantResetErr: true},
		{name: "reset during upload", fault: Reset(), post: true, wantResetErr: true},
		{name: "pass", fault: Pass(), wantStatus: 200, wantInBody: "GET /v2.1/x", wantUpstream: true},
		{name: "short stall then forward", fault: Stall(time.Millisecond), wantStatus: 200, wantUpstream: true},
		{name: "cut longer than body passes", fault: CutRequest(bodySize), post: true,
			wantStatus: 200, wantInBody: fmt.Sprintf("body=%d", bodySize), wantUpstream: true},
		{name: "cut response longer than body passes", fault: CutResponse(1000), wantStatus: 200, wantUpstream: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits := make(chan string, 1)
			up := newUpstreams(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits <- r.URL.Path
				echo().ServeHTTP(w, r)
			}), nil)
			p := newProxy(t, up.keystone.URL)
			compute := catalog(t, p)[Compute]
			var fired atomic.Int32
			h := mustAdd(t, p, Rule{Service: Compute, Path: "^/v2.1/x$", Fault: tt.fault, OnFire: func() { fired.Add(1) }})

			method, body := http.MethodGet, io.Reader(nil)
			if tt.post {
				method, body = http.MethodPost, bytes.NewReader(make([]byte, bodySize))
			}
			req, _ := http.NewRequest(method, compute+"/x", body)
			resp, err := http.DefaultClient.Do(req)
			switch {
			case tt.wantResetErr:
				if err == nil {
					resp.Body.Close()
					t.Fatalf("got %s, want a connection reset", resp.Status)
				}
				if !isReset(err) && !(tt.post && isBrokenUpload(err)) {
					t.Fatalf("err = %v, want ECONNRESET", err)
				}
			case err != nil:
				t.Fatalf("request: %v", err)
			default:
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					t.Fatalf("body: %v", err)
				}
				if resp.StatusCode != tt.wantStatus || !strings.Contains(string(b), tt.wantInBody) {
					t.Errorf("got %d %q, want %d containing %q", resp.StatusCode, b, tt.wantStatus, tt.wantInBody)
				}
				if resp.StatusCode == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Keystone uri=") {
					t.Errorf("401 without a Keystone WWW-Authenticate header: %v", resp.Header)
				}
				if resp.StatusCode >= 400 && resp.Header.Get("Content-Type") != "application/json" {
					t.Errorf("error answer is %q, want JSON", resp.Header.Get("Content-Type"))
				}
			}
			log := requests(t, p)
			if got := len(hits) == 1; got != tt.wantUpstream {
				t.Errorf("upstream saw the request: %v, want %v", got, tt.wantUpstream)
			}
			if h.Fired() != 1 || fired.Load() != 1 {
				t.Errorf("Fired() = %d, OnFire calls = %d; want 1 and 1", h.Fired(), fired.Load())
			}
			last := log[len(log)-1]
			if last.Rule != h.Name() || last.Fault != tt.fault.String() || last.Status != tt.wantStatus {
				t.Errorf("log entry %+v, want rule %q, fault %q, status %d", last, h.Name(), tt.fault, tt.wantStatus)
			}
		})
	}
}

func TestCutResponse(t *testing.T) {
	full := bytes.Repeat([]byte("0123456789"), 400_000) // 4 MB: more than socket buffers hold
	up := newUpstreams(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(full)))
		_, _ = w.Write(full)
	}), nil)
	p := newProxy(t, up.keystone.URL)
	compute := catalog(t, p)[Compute]
	mustAdd(t, p, Rule{Method: "get", Path: "/download", Fault: CutResponse(1_234_567)})

	resp, err := http.Get(compute + "/download")
	if err != nil {
		t.Fatalf("the status and headers should arrive: %v", err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("read %d of %d bytes without an error", len(got), len(full))
	}
	if !isReset(err) && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("body error %v, want a reset or an unexpected EOF", err)
	}
	if resp.StatusCode != 200 || !bytes.Equal(got, full[:1_234_567]) {
		t.Errorf("got %d and %d bytes, want 200 and exactly the first 1234567 bytes", resp.StatusCode, len(got))
	}
}

// A stalled response delivers its first n bytes, then nothing until the
// client gives up.
func TestStallResponse(t *testing.T) {
	full := bytes.Repeat([]byte("0123456789"), 100_000)
	up := newUpstreams(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(full)))
		_, _ = w.Write(full)
	}), nil)
	p := newProxy(t, up.keystone.URL)
	compute := catalog(t, p)[Compute]
	mustAdd(t, p, Rule{Method: "get", Path: "/download", Fault: StallResponse(5000)})

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, compute+"/download", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("the status and headers should arrive: %v", err)
	}
	defer resp.Body.Close()
	first := make([]byte, 5000)
	if _, err := io.ReadFull(resp.Body, first); err != nil || !bytes.Equal(first, full[:5000]) {
		t.Fatalf("the first 5000 bytes should arrive: %v", err)
	}
	more := make(chan error, 1)
	go func() {
		_, err := resp.Body.Read(make([]byte, 1))
		more <- err
	}()
	select {
	case err := <-more:
		t.Fatalf("a byte past the stall arrived (err %v)", err)
	case <-time.After(200 * time.Millisecond): // nothing comes: the client gives up
	}
	cancel()
	if err := <-more; err == nil {
		t.Error("the read after the client gave up succeeded")
	}
}

func TestCutRequest(t *testing.T) {
	type seen struct {
		n   int64
		err error
	}
	upstreamRead := make(chan seen, 1)
	up := newUpstreams(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		upstreamRead <- seen{n, err}
	}), nil)
	p := newProxy(t, up.keystone.URL)
	compute := catalog(t, p)[Compute]
	mustAdd(t, p, Rule{Method: http.MethodPut, Fault: CutRequest(100_000)})

	const size = 8 << 20
	req, _ := http.NewRequest(http.MethodPut, compute+"/upload", bytes.NewReader(make([]byte, size)))
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("upload of a cut request succeeded: %s", resp.Status)
	}
	if !isBrokenUpload(err) {
		t.Errorf("err = %v, want ECONNRESET or EPIPE", err)
	}
	select {
	case s := <-upstreamRead:
		if s.err == nil || s.n > 100_000 {
			t.Errorf("upstream read %d bytes, err %v; want at most 100000 and an error", s.n, s.err)
		}
	case <-time.After(safety):
		t.Fatal("upstream never saw the end of the cut request")
	}
}

func TestStallEndsWithTheClientContext(t *testing.T) {
	up := newUpstreams(t, nil, nil)
	p := newProxy(t, up.keystone.URL)
	compute := catalog(t, p)[Compute]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mustAdd(t, p, Rule{Service: Compute, Fault: Stall(0), OnFire: cancel})

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, compute+"/servers", nil)
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("stalled request answered %s", resp.Status)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	// The proxy side ends too: Close waits for running requests and says
	// so if one is still stuck.
	if err := p.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	log := p.Requests()
	if last := log[len(log)-1]; last.Path != "/v2.1/servers" || last.Status != 0 {
		t.Errorf("log entry %+v, want the stalled request with no status", last)
	}
}

func TestCloseEndsStalls(t *testing.T) {
	up := newUpstreams(t, nil, nil)
	p := newProxy(t, up.keystone.URL)
	compute := catalog(t, p)[Compute]
	stalled := make(chan struct{})
	mustAdd(t, p, Rule{Fault: Stall(0), OnFire: func() { close(stalled) }})

	errc := make(chan error, 1)
	go func() {
		resp, err := http.Get(compute + "/servers")
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("answered %s", resp.Status)
		}
		errc <- err
	}()
	waitFor(t, stalled, "the request to stall")
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-errc:
		if !isReset(err) && !errors.Is(err, io.EOF) {
			t.Errorf("client error %v, want a reset", err)
		}
	case <-time.After(safety):
		t.Fatal("the stalled client was not released by Close")
	}
	if _, err := http.Get(p.AuthURL()); err == nil {
		t.Error("the proxy still answers after Close")
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestWhen(t *testing.T) {
	tests := []struct {
		when  When
		want  string // status per request, 1..6
		fired int
	}{
		{Every(), "503 503 503 503 503 503", 6},
		{When{}, "503 503 503 503 503 503", 6},
		{Nth(3), "200 200 503 200 200 200", 1},
		{FirstN(2), "503 503 200 200 200 200", 2},
		{Nth(9), "200 200 200 200 200 200", 0},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%+v", tt.when), func(t *testing.T) {
			up := newUpstreams(t, nil, nil)
			p := newProxy(t, up.keystone.URL)
			image := catalog(t, p)[Image]
			h := mustAdd(t, p, Rule{Method: http.MethodGet, Service: Image, Path: `^/v2/images$`, When: tt.when, Fault: Status(503)})
			var got []string
			for range 6 {
				get(t, image+"/v2/images/other") // never matches the path
				status, _ := get(t, image+"/v2/images")
				got = append(got, fmt.Sprint(status))
			}
			if strings.Join(got, " ") != tt.want {
				t.Errorf("statuses %s, want %s", strings.Join(got, " "), tt.want)
			}
			if h.Fired() != tt.fired || h.Matched() != 6 {
				t.Errorf("Fired %d Matched %d, want %d and 6", h.Fired(), h.Matched(), tt.fired)
			}
		})
	}
}

// TestRuleBody: a Body pattern tells one server action from another by
// what the request asks; every request, matched or not, reaches the
// upstream with its body whole (a body longer than MaxRuleBody included).
func TestRuleBody(t *testing.T) {
	up := newUpstreams(t, nil, nil)
	p := newProxy(t, up.keystone.URL)
	compute := catalog(t, p)[Compute]
	stop := mustAdd(t, p, Rule{Method: http.MethodPost, Service: Compute, Path: `/action$`,
		Body: `^\s*\{\s*"os-stop"`, Fault: Status(503)})
	long := `{"createImage": {"name": "` + strings.Repeat("x", MaxRuleBody) + `"}}`
	tests := []struct {
		path, body string
		want       int
		echo       string // the upstream's answer, when forwarded
	}{
		{"/servers/1/action", `{"os-getConsoleOutput": {"length": 0}}`, 200, "POST /v2.1/servers/1/action host="},
		{"/servers/1/action", `{"os-stop": null}`, 503, ""},
		{"/servers/1/action", ` { "os-stop" : null}`, 503, ""},
		{"/servers/1/action", long, 200, fmt.Sprintf("body=%d", len(long))},
		{"/servers/1/action", "", 200, "body=0"},
		{"/servers/1", `{"os-stop": null}`, 200, "body=17"}, // not the action path
	}
	for _, tt := range tests {
		resp, err := http.Post(compute+tt.path, "application/json", strings.NewReader(tt.body))
		if err != nil {
			t.Fatalf("POST %s: %v", tt.path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.want || !strings.Contains(string(b), tt.echo) {
			t.Errorf("POST %s %.40q: %d %q, want %d and %q", tt.path, tt.body, resp.StatusCode, b, tt.want, tt.echo)
		}
	}
	if stop.Fired() != 2 || stop.Matched() != 2 {
		t.Errorf("the os-stop rule fired %d times, matched %d; want 2 and 2", stop.Fired(), stop.Matched())
	}
}

func TestRuleOrderRemoveAndClear(t *testing.T) {
	up := newUpstreams(t, nil, nil)
	p := newProxy(t, up.keystone.URL)
	compute := catalog(t, p)[Compute]
	first := mustAdd(t, p, Rule{Name: "first", Service: Compute, Fault: Status(500)})
	second := mustAdd(t, p, Rule{Service: Compute, Fault: Status(503)})
	if second.Name() != "rule-2" {
		t.Errorf("default name %q, want rule-2", second.Name())
	}
	steps := []struct {
		do   func()
		want int
	}{
		{func() {}, 500},
		{first.Remove, 503},
		{p.ClearRules, 200},
	}
	for i, s := range steps {
		s.do()
		if status, _ := get(t, compute+"/servers"); status != s.want {
			t.Errorf("step %d: status %d, want %d", i, status, s.want)
		}
	}
	if first.Fired() != 1 || first.Matched() != 1 || second.Fired() != 1 || second.Matched() != 2 {
		t.Errorf("first fired/matched %d/%d, second %d/%d; want 1/1 and 1/2",
			first.Fired(), first.Matched(), second.Fired(), second.Matched())
	}
}

func TestAddRefusesBadRules(t *testing.T) {
	p := newProxy(t, "http://127.0.0.1:1/v3")
	for name, r := range map[string]Rule{
		"status 200":       {Fault: Status(200)},
		"status 600":       {Fault: Status(600)},
		"negative cut":     {Fault: CutResponse(-1)},
		"negative request": {Fault: CutRequest(-5)},
		"negative after":   {Fault: StatusAfter(401, -1)},
		"nth 0":            {When: Nth(0)},
		"first 0":          {When: FirstN(0)},
		"bad regexp":       {Path: "("},
		"bad body regexp":  {Body: "("},
	} {
		if _, err := p.Add(r); err == nil {
			t.Errorf("%s: Add accepted %+v", name, r)
		}
	}
}

// TestStreamsResponses shows the proxy passes the first bytes of a response
// on while the upstream is still sending: it cannot be buffering the body.
func TestStreamsResponses(t *testing.T) {
	release := make(chan struct{})
	up := newUpstreams(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(make([]byte, 64<<10))
		http.NewResponseController(w).Flush()
		select { // the rest only once the client has the first part
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write([]byte("end"))
	}))
	p := newProxy(t, up.keystone.URL)
	image := catalog(t, p)[Image]

	resp, err := http.Get(image + "/v2/images/x/file")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make(chan struct{})
	go func() {
		defer close(first)
		_, err = io.ReadFull(resp.Body, make([]byte, 64<<10))
	}()
	waitFor(t, first, "the first 64 KiB while the upstream holds the rest")
	if err != nil {
		t.Fatalf("first part: %v", err)
	}
	close(release)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "end" {
		t.Errorf("rest %q, err %v", rest, err)
	}
}

// TestStreamsRequests shows the upstream gets the first bytes of an upload
// before the client has sent the rest.
func TestStreamsRequests(t *testing.T) {
	firstArrived := make(chan struct{})
	up := newUpstreams(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadFull(r.Body, make([]byte, 64<<10)); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		close(firstArrived)
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "rest=%d", n)
	}))
	p := newProxy(t, up.keystone.URL)
	image := catalog(t, p)[Image]

	pr, pw := io.Pipe()
	go func() {
		if _, err := pw.Write(make([]byte, 64<<10)); err != nil {
			pw.CloseWithError(err)
			return
		}
		select { // the rest only once the upstream has the first part
		case <-firstArrived:
		case <-time.After(safety):
			pw.CloseWithError(errors.New("upstream never got the first part"))
			return
		}
		_, _ = pw.Write([]byte("tail"))
		pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPut, image+"/v2/images/x/file", pr)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "rest=4" {
		t.Errorf("got %s %q, want 200 rest=4", resp.Status, b)
	}
}

// TestConcurrentRequestsAndRules runs many requests at once while rules are
// added and removed (run with -race): the counters stay exact.
func TestConcurrentRequestsAndRules(t *testing.T) {
	up := newUpstreams(t, nil, nil)
	p := newProxy(t, up.keystone.URL)
	compute := catalog(t, p)[Compute]
	requests(t, p)
	p.ClearRequests()
	h := mustAdd(t, p, Rule{Service: Compute, Path: "^/v2.1/servers$", When: FirstN(10), Fault: Status(503)})

	const n = 100
	statuses := make(chan int, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(compute + "/servers")
			if err != nil {
				t.Error(err)
				statuses <- 0
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	wg.Add(1)
	go func() { // churn: rules that never match, added and removed meanwhile
		defer wg.Done()
		for i := range 50 {
			other, err := p.Add(Rule{Service: Image, Fault: Reset()})
			if err != nil {
				t.Error(err)
				return
			}
			_ = p.Requests()
			if i%2 == 0 {
				other.Remove()
			}
		}
	}()
	wg.Wait()
	close(statuses)
	count := map[int]int{}
	for s := range statuses {
		count[s]++
	}
	if count[503] != 10 || count[200] != n-10 {
		t.Errorf("statuses %v, want 10×503 and %d×200", count, n-10)
	}
	if h.Fired() != 10 || h.Matched() != n {
		t.Errorf("Fired %d Matched %d, want 10 and %d", h.Fired(), h.Matched(), n)
	}
	if got := len(requests(t, p)); got != n {
		t.Errorf("request log has %d entries, want %d", got, n)
	}
}
