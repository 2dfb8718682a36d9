package faultproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

const (
	// dialTimeout bounds a connection to an upstream (all on loopback).
	dialTimeout = 10 * time.Second
	// upstreamHeaderTimeout bounds the wait for an upstream's response
	// headers once the request is sent (a Stall rule is the way to hang).
	upstreamHeaderTimeout = 10 * time.Minute
	// readHeaderTimeout bounds a client sending its request headers.
	readHeaderTimeout = 30 * time.Second
	// closeWait bounds how long Close waits for running handlers to return.
	closeWait = 10 * time.Second
)

// Request is one entry of the proxy's request log.
type Request struct {
	Method  string
	Service string // catalog service type (Identity for the AuthURL listener)
	Path    string
	// Status is the status answered (for a cut response, the upstream's);
	// 0 if the connection was reset or dropped before any status.
	Status int
	Rule   string // the rule that fired on the request; "" if none
	Fault  string // what it did (Fault.String()); "" if no rule fired
}

// Option configures New.
type Option func(*Proxy)

// WithLogger sets the logger (default: discard). It never logs headers or
// bodies, so tokens and passwords do not reach it.
func WithLogger(l *slog.Logger) Option { return func(p *Proxy) { p.log = l } }

// Proxy is a running fault-injecting proxy. Its methods are safe for
// concurrent use.
type Proxy struct {
	log       *slog.Logger
	transport *http.Transport
	rules     ruleSet
	keystone  *route
	authURL   string
	done      chan struct{} // closed by Close; ends stalls

	mu       sync.Mutex
	closed   bool
	routes   map[routeKey]*route
	requests []*Request    // in arrival order; entries in flight are updated by leave
	inflight int           // requests being handled
	idle     chan struct{} // closed while inflight is 0

	serving sync.WaitGroup // Serve goroutines
}

// routeKey identifies an upstream: a service type at an origin (scheme://host:port).
type routeKey struct{ service, origin string }

// route is one proxy listener in front of one upstream.
type route struct {
	p        *Proxy
	service  string
	upstream url.URL // scheme and host only
	addr     string  // the listener's host:port
	srv      *http.Server
}

// New starts a proxy in front of the Keystone at upstreamKeystone (for
// example http://127.0.0.1:5000/v3), which must be on loopback. Clients use
// AuthURL as their auth_url. Close it when done.
func New(upstreamKeystone string, opts ...Option) (*Proxy, error) {
	u, err := url.Parse(upstreamKeystone)
	if err != nil || u.Scheme != "http" || u.Host == "" || u.User != nil {
		return nil, errs.Usage("faultproxy: upstream Keystone %q: want http://<loopback address>[:port][/path]", upstreamKeystone)
	}
	if !isLoopbackHost(u.Hostname()) {
		return nil, errs.Usage("faultproxy: upstream Keystone %q is not on loopback: only 127.0.0.0/8, ::1 and localhost are proxied", upstreamKeystone)
	}
	dialer := &net.Dialer{Timeout: dialTimeout, Control: loopbackOnly}
	p := &Proxy{
		log: slog.New(slog.DiscardHandler),
		transport: &http.Transport{
			Proxy:                 nil, // never an environment proxy: upstreams are local
			DialContext:           dialer.DialContext,
			DisableCompression:    true, // pass encodings through untouched
			MaxIdleConnsPerHost:   16,
			IdleConnTimeout:       30 * time.Second,
			ResponseHeaderTimeout: upstreamHeaderTimeout,
		},
		done:   make(chan struct{}),
		routes: map[routeKey]*route{},
		idle:   make(chan struct{}),
	}
	close(p.idle)
	for _, o := range opts {
		o(p)
	}
	origin := url.URL{Scheme: u.Scheme, Host: u.Host}
	p.mu.Lock()
	p.keystone, err = p.newRouteLocked(Identity, origin)
	p.mu.Unlock()
	if err != nil {
		return nil, err
	}
	path := strings.TrimSuffix(u.EscapedPath(), "/")
	if path == "" {
		path = "/v3"
	}
	p.authURL = "http://" + p.keystone.addr + path
	p.log.Debug("faultproxy: started", "auth_url", p.authURL, "upstream", upstreamKeystone)
	return p, nil
}

// AuthURL is the Keystone URL clients authenticate against
// (http://127.0.0.1:PORT plus the upstream's path, /v3 if it had none).
func (p *Proxy) AuthURL() string { return p.authURL }

// URL is the root of the proxy's Keystone listener (http://127.0.0.1:PORT).
func (p *Proxy) URL() string { return "http://" + p.keystone.addr }

// Add adds a rule after the existing ones and returns its handle. A request
// is counted by every rule whose pattern it matches; of those that fire on
// it, the earliest added applies its fault.
func (p *Proxy) Add(r Rule) (*Handle, error) { return p.rules.add(r) }

// ClearRules removes every rule (handles keep their counts).
func (p *Proxy) ClearRules() { p.rules.clear() }

// Requests returns a copy of the request log in arrival order. A request
// still in flight has Status 0 and maybe no Rule yet; call Idle first for a
// settled log.
func (p *Proxy) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Request, len(p.requests))
	for i, r := range p.requests {
		out[i] = *r
	}
	return out
}

// ClearRequests empties the request log.
func (p *Proxy) ClearRequests() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests = nil
}

// Idle waits until no request is in flight, so that every request whose
// answer a client has received is in the log (a handler logs its request
// just after the last byte of a streamed answer went out).
func (p *Proxy) Idle(ctx context.Context) error {
	p.mu.Lock()
	idle := p.idle
	p.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("faultproxy: waiting for requests in flight: %w", ctx.Err())
	}
}

// Close stops every listener, ends stalled requests (their clients see a
// reset), drops open connections and waits (at most 10 s) for running
// requests to return. Calling it again does nothing.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	servers := make([]*http.Server, 0, len(p.routes))
	for _, rt := range p.routes {
		servers = append(servers, rt.srv)
	}
	p.mu.Unlock()

	var problems []error
	for _, srv := range servers {
		if err := srv.Close(); err != nil {
			problems = append(problems, err)
		}
	}
	p.transport.CloseIdleConnections()

	ctx, cancel := context.WithTimeout(context.Background(), closeWait)
	defer cancel()
	if err := p.Idle(ctx); err != nil {
		problems = append(problems, err)
	}
	p.serving.Wait() // prompt: every server is closed
	if err := errors.Join(problems...); err != nil {
		return fmt.Errorf("faultproxy: close: %w", err)
	}
	return nil
}

// newRouteLocked starts a listener in front of upstream. p.mu must be held.
func (p *Proxy) newRouteLocked(service string, upstream url.URL) (*route, error) {
	if p.closed {
		return nil, errors.New("faultproxy: closed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listening on loopback for %s: %w", service, err)
	}
	rt := &route{p: p, service: service, upstream: upstream, addr: ln.Addr().String()}
	rt.srv = &http.Server{
		Handler:           rt,
		ReadHeaderTimeout: readHeaderTimeout,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	p.routes[routeKey{service, upstream.String()}] = rt
	p.serving.Add(1)
	go func() {
		defer p.serving.Done()
		if err := rt.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			p.log.Warn("faultproxy: listener stopped", "service", service, "addr", rt.addr, "err", err)
		}
	}()
	p.log.Debug("faultproxy: route", "service", service, "listen", rt.addr, "upstream", upstream.String())
	return rt, nil
}

// proxyURL maps a catalog endpoint URL to the same URL on the proxy
// listener for (service, the endpoint's origin), starting it if needed.
func (p *Proxy) proxyURL(service, rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("endpoint URL %q: %w", rawURL, err)
	}
	if u.Scheme != "http" || u.Host == "" {
		return "", fmt.Errorf("endpoint URL %q: only http:// endpoints can be proxied", rawURL)
	}
	if !isLoopbackHost(u.Hostname()) {
		return "", fmt.Errorf("endpoint URL %q is not on loopback; the fault proxy only proxies loopback services", rawURL)
	}
	origin := url.URL{Scheme: u.Scheme, Host: u.Host}
	p.mu.Lock()
	rt, ok := p.routes[routeKey{service, origin.String()}]
	if !ok {
		rt, err = p.newRouteLocked(service, origin)
	}
	p.mu.Unlock()
	if err != nil {
		return "", err
	}
	proxied := *u
	proxied.Host = rt.addr
	return proxied.String(), nil
}

// enter logs the arrival of r and counts it in flight; it returns nil
// once the proxy is closing.
func (p *Proxy) enter(r Request) *Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	entry := &r
	p.requests = append(p.requests, entry)
	p.inflight++
	if p.inflight == 1 {
		p.idle = make(chan struct{})
	}
	return entry
}

// leave completes a request's log entry with how it ended.
func (p *Proxy) leave(entry *Request, status int, rule *Handle) {
	p.mu.Lock()
	entry.Status = status
	if rule != nil {
		entry.Rule, entry.Fault = rule.rule.Name, rule.rule.Fault.String()
	}
	r := *entry
	p.inflight--
	if p.inflight == 0 {
		close(p.idle)
	}
	p.mu.Unlock()
	p.log.Debug("faultproxy: request", "method", r.Method, "service", r.Service, "path", r.Path,
		"status", r.Status, "rule", r.Rule)
}

// ServeHTTP handles one request on the route's listener: it applies the
// fault of the rule that fires on it, if any, and forwards it otherwise.
func (rt *route) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := rt.p
	rec := &recorder{ResponseWriter: w, cutAfter: -1, done: p.done}
	entry := p.enter(Request{Method: r.Method, Service: rt.service, Path: r.URL.Path})
	if entry == nil {
		rec.reset()
		return
	}
	var body []byte
	if p.rules.wantsBody(r.Method, rt.service, r.URL.Path) {
		body = peekBody(r)
	}
	h := p.rules.match(r.Method, rt.service, r.URL.Path, body)
	defer func() { p.leave(entry, rec.status, h) }() // runs on ReverseProxy's ErrAbortHandler panic too

	fault := Pass()
	if h != nil {
		fault = h.rule.Fault
		p.log.Info("faultproxy: rule fired", "rule", h.rule.Name, "fault", fault.String(),
			"method", r.Method, "service", rt.service, "path", r.URL.Path)
		if h.rule.OnFire != nil {
			h.rule.OnFire()
		}
	}

	switch fault.kind {
	case faultStatus:
		if fault.after > 0 {
			_, _ = io.CopyN(io.Discard, r.Body, fault.after) // a short body is fine
		}
		p.writeError(rec, fault.status, fmt.Sprintf("faultproxy: %s injected by rule %q", fault, h.rule.Name))
		return
	case faultReset:
		rec.reset()
		return
	case faultStall:
		var timeout <-chan time.Time // nil: no timeout
		if fault.stall > 0 {
			t := time.NewTimer(fault.stall)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-timeout:
		case <-r.Context().Done(): // the client gave up
			rec.reset()
			return
		case <-p.done:
			rec.reset()
			return
		}
	case faultCutRequest:
		r.Body = &cutReader{r: r.Body, left: fault.after, rec: rec}
	case faultCutResponse:
		rec.cutAfter = fault.after
	case faultStallResponse:
		rec.cutAfter, rec.stallFirst = fault.after, r.Context().Done()
	}
	rt.forward(rec, r)
}

// forward streams r to the upstream and the answer back, rewriting the
// catalog of Keystone token responses.
func (rt *route) forward(rec *recorder, r *http.Request) {
	p := rt.p
	token := rt.service == Identity && isTokenPath(r.URL.Path) &&
		(r.Method == http.MethodPost || r.Method == http.MethodGet)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = rt.upstream.Scheme
			pr.Out.URL.Host = rt.upstream.Host
			// pr.Out.Host stays the client's (the proxy's address), so links
			// the service builds from it lead back through the proxy.
			if token {
				pr.Out.Header.Del("Accept-Encoding") // a plain body to rewrite
			}
		},
		Transport:     p.transport,
		FlushInterval: -1, // stream: every chunk goes out as it arrives
		ErrorLog:      slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		ModifyResponse: func(resp *http.Response) error {
			if rec.requestCut.Load() {
				return errRequestCut
			}
			if token && resp.StatusCode/100 == 2 {
				return p.rewriteTokenResponse(resp)
			}
			return nil
		},
		ErrorHandler: func(_ http.ResponseWriter, req *http.Request, err error) {
			if rec.requestCut.Load() || req.Context().Err() != nil {
				rec.reset()
				return
			}
			p.log.Warn("faultproxy: upstream failed", "service", rt.service, "method", req.Method,
				"path", req.URL.Path, "err", err)
			p.writeError(rec, http.StatusBadGateway, fmt.Sprintf("faultproxy: %s upstream: %v", rt.service, err))
		},
	}
	rp.ServeHTTP(rec, r)
}

// rewriteTokenResponse replaces resp's body with one whose catalog points
// at the proxy.
func (p *Proxy) rewriteTokenResponse(resp *http.Response) error {
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && ce != "identity" {
		return fmt.Errorf("token response is %s-encoded; its catalog cannot be rewritten", ce)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenBody+1))
	_ = resp.Body.Close()
	if err != nil {
		return fmt.Errorf("reading token response: %w", err)
	}
	if len(body) > maxTokenBody {
		return fmt.Errorf("token response larger than %d bytes", maxTokenBody)
	}
	out, err := rewriteCatalog(body, p.proxyURL)
	if err != nil {
		return fmt.Errorf("rewriting token catalog: %w", err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(out))
	resp.ContentLength = int64(len(out))
	resp.Header.Set("Content-Length", strconv.Itoa(len(out)))
	return nil
}

// writeError answers code with a body shaped like Keystone's errors
// ({"error": {"code", "title", "message"}}).
func (p *Proxy) writeError(w http.ResponseWriter, code int, msg string) {
	body, err := json.Marshal(map[string]any{"error": map[string]any{
		"code": code, "title": http.StatusText(code), "message": msg,
	}})
	if err != nil { // cannot happen: a map of strings and an int
		body = []byte(`{"error": {}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if code == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", fmt.Sprintf("Keystone uri=%q", p.authURL))
	}
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// isLoopbackHost reports whether host (no port, no brackets) is localhost or
// a loopback IP address.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// loopbackOnly is a net.Dialer Control hook: it refuses any address (after
// name resolution) that is not a loopback IP.
func loopbackOnly(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("faultproxy: dial %q: %w", address, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("faultproxy: refusing to dial %s: not a loopback address", address)
	}
	return nil
}

// peekBody reads up to MaxRuleBody bytes of r's body for Rule.Body patterns
// and puts them back in front of the rest, so the request is forwarded
// (or faulted) whole.
func peekBody(r *http.Request) []byte {
	if r.Body == nil || r.Body == http.NoBody {
		return []byte{}
	}
	head, _ := io.ReadAll(io.LimitReader(r.Body, MaxRuleBody)) // a read error shows on forwarding
	r.Body = &peekedBody{Reader: io.MultiReader(bytes.NewReader(head), r.Body), Closer: r.Body}
	return head
}

// peekedBody is a request body whose start was read by peekBody.
type peekedBody struct {
	io.Reader
	io.Closer
}
