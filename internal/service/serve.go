package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// ServeOptions change Serve.
type ServeOptions struct {
	// NoSchedule serves HTTP only: no build is ever started.
	NoSchedule bool
	// LatestTTL is how long GET /v1/images/latest reuses a look-up's
	// answer, the images or the failure (default DefaultLatestTTL).
	LatestTTL time.Duration
	// ShutdownTimeout bounds the HTTP shutdown (default 10s).
	ShutdownTimeout time.Duration
}

// GET /v1/images/latest looks the images up at most once per
// DefaultLatestTTL, failures included: a cloud that fails is asked again
// after DefaultLatestTTL, not at every request. One look-up takes at most
// latestLookupTimeout.
const (
	DefaultLatestTTL    = 30 * time.Second
	latestLookupTimeout = time.Minute
)

// Serve runs the builder host as a daemon on ln until ctx ends: every
// Config.CheckInterval (and once at start) it builds the cells that are
// due (Build with IfDue), and it answers
//
//	GET /healthz            a JSON status: 200 "ok", or 503 "failing"
//	                        when the last check failed, and why
//	GET /metrics            Prometheus metrics (s.Metrics)
//	GET /v1/images/latest   the LatestDocument, as `latest --format json`
//
// When ctx ends a running build is cancelled (its cleanups run), the HTTP
// server shuts down gracefully, and Serve returns nil.
func (s *Service) Serve(ctx context.Context, ln net.Listener, opts ServeOptions) error {
	if s.Metrics == nil {
		s.Metrics = NewMetrics(true, s.Now)
	}
	if opts.LatestTTL <= 0 {
		opts.LatestTTL = DefaultLatestTTL
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 10 * time.Second
	}
	log := s.log()
	// The address listened on, names resolved: serve.allow_remote's rule
	// once more (--listen, or a name that resolved elsewhere).
	if remote := !listenerOnLoopback(ln.Addr()); remote && !s.Config.AllowRemote {
		return errs.Usage("serving on %s, not a loopback address: set serve.allow_remote: true in %s to let other hosts reach it", ln.Addr(), s.Config.Path)
	} else if remote {
		log.Warn("serving on an address other hosts can reach (serve.allow_remote): /healthz, /metrics and /v1/images/latest answer anyone who can connect; limit who can with a firewall",
			"addr", ln.Addr().String())
	}
	if dir, err := s.Config.serviceDir(s.getenv); err == nil {
		if st, err := (stateStore{dir: dir}).Load(); err == nil {
			s.Metrics.SetState(st)
		}
	}
	h := &handlers{s: s, started: s.now(),
		images: &latestCache{ctx: ctx, lookup: s.latestDocument, now: s.now, ttl: opts.LatestTTL}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", h.health)
	mux.Handle("GET /metrics", s.Metrics.Handler())
	mux.HandleFunc("GET /v1/images/latest", h.latest)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("serving", "addr", ln.Addr().String(), "check_interval", s.Config.CheckInterval, "schedule", !opts.NoSchedule)

	var loop sync.WaitGroup
	if !opts.NoSchedule {
		loop.Go(func() { s.scheduleLoop(ctx, h) })
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opts.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Warn("HTTP shutdown", "error", err)
	}
	loop.Wait()
	h.images.close()
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return errs.Wrap(errs.KindInternal, serveErr, "serving HTTP on %s", ln.Addr())
	}
	log.Info("stopped")
	return nil
}

// listenerOnLoopback reports whether a listener's address is loopback only.
func listenerOnLoopback(a net.Addr) bool {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.IP.IsLoopback()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// scheduleLoop checks at once, then every CheckInterval, until ctx ends.
func (s *Service) scheduleLoop(ctx context.Context, h *handlers) {
	for {
		h.setBuilding(true)
		rep, err := s.Build(ctx, BuildOptions{IfDue: true})
		h.setBuilding(false)
		h.checked(rep, err)
		if err != nil && ctx.Err() == nil {
			s.log().Error("scheduled build", "error", err, "exit_code", errs.ExitCode(err))
		}
		if err := s.sleep(ctx, s.Config.CheckInterval); err != nil {
			return
		}
	}
}

// handlers serve the HTTP API.
type handlers struct {
	s       *Service
	started time.Time
	images  *latestCache

	// mu guards what /healthz shows; it is never held while waiting.
	mu        sync.Mutex
	building  bool
	lastCheck time.Time
	unhealthy string // why the last check failed, one line; "" when it did not
}

func (h *handlers) setBuilding(b bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.building = b
}

func (h *handlers) checked(rep *Report, err error) {
	if rep != nil && rep.Latest != nil {
		h.images.store(rep.Latest, nil, h.s.now())
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastCheck = h.s.now()
	h.unhealthy = checkFailure(rep, err)
}

// checkFailure says in one line why a scheduled check failed: which
// images failed with which exit code, or the kind and exit code of the
// failure. It quotes no message: a build's error carries the tails of the
// guest's console and cloud-init log, a callback's its output, and those
// go to the log only (scheduleLoop and buildCell log them).
func checkFailure(rep *Report, err error) string {
	if err == nil {
		return ""
	}
	var failed []string
	built := 0
	if rep != nil {
		for _, c := range rep.Cells {
			if c.Skipped {
				continue
			}
			built++
			if c.Err != nil {
				failed = append(failed, fmt.Sprintf("%s (exit %d)", c.ImageName, c.ExitCode))
			}
		}
	}
	if len(failed) > 0 {
		return fmt.Sprintf("last check: %d of %d image builds failed: %s; the log has the details",
			len(failed), built, strings.Join(failed, ", "))
	}
	return fmt.Sprintf("last check failed: %s (exit %d); the log has the details", errs.KindOf(err), errs.ExitCode(err))
}

// healthStatus is GET /healthz: status "ok" (200) or "failing" (503),
// and why in one line.
type healthStatus struct {
	Status    string    `json:"status"`
	Reason    string    `json:"reason,omitempty"`
	Started   time.Time `json:"started"`
	Building  bool      `json:"building"`
	LastCheck time.Time `json:"last_check,omitzero"`
}

func (h *handlers) health(w http.ResponseWriter, _ *http.Request) {
	h.mu.Lock()
	st := healthStatus{Status: "ok", Reason: h.unhealthy, Started: h.started, Building: h.building, LastCheck: h.lastCheck}
	h.mu.Unlock()
	code := http.StatusOK
	if st.Reason != "" {
		st.Status, code = "failing", http.StatusServiceUnavailable
	}
	writeJSON(w, code, st)
}

// latest answers from the latest look-up (see latestCache).
func (h *handlers) latest(w http.ResponseWriter, r *http.Request) {
	doc, err := h.images.get(r.Context())
	if err != nil {
		// The look-up's error names auth URLs, clouds and the cloud's
		// answers: those go to the log; the client gets its kind.
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": fmt.Sprintf(
			"looking up the latest images failed: %s (exit %d); the log has the details", errs.KindOf(err), errs.ExitCode(err))})
		return
	}
	writeJSON(w, http.StatusOK, doc)
}

// latestDocument is one look-up of GET /v1/images/latest; a failure is
// logged here, once per look-up.
func (s *Service) latestDocument(ctx context.Context) (*LatestDocument, error) {
	images, err := s.Latest(ctx)
	if err != nil {
		s.log().Error("GET /v1/images/latest: looking up the latest images", "error", err)
		return nil, err
	}
	s.Metrics.SetImages(images)
	doc := NewLatestDocument(images)
	return &doc, nil
}

// latestCache answers GET /v1/images/latest. At most one look-up runs at a
// time, on its own goroutine and context (Serve's, bounded by
// latestLookupTimeout); requests arriving meanwhile wait for it or for
// their own end. Its answer, the document or the failure, is reused for
// ttl. The lock is never held during a look-up, so /healthz and the
// scheduler never wait behind one.
type latestCache struct {
	ctx     context.Context
	lookup  func(context.Context) (*LatestDocument, error)
	now     func() time.Time
	ttl     time.Duration
	running sync.WaitGroup // the look-up goroutine, waited for by Serve

	mu       sync.Mutex
	closed   bool // Serve is done: no look-up starts
	doc      *LatestDocument
	err      error
	at       time.Time     // when the answer's look-up started (orders answers); zero: no answer yet
	stored   time.Time     // when the answer came: its ttl counts from here
	inflight chan struct{} // closed when the running look-up ends; nil: none runs
}

// get returns a fresh answer, starting a look-up when there is none.
func (c *latestCache) get(ctx context.Context) (*LatestDocument, error) {
	c.mu.Lock()
	if !c.stored.IsZero() && c.now().Sub(c.stored) < c.ttl {
		defer c.mu.Unlock()
		return c.doc, c.err
	}
	done := c.inflight
	if done == nil && c.closed {
		c.mu.Unlock()
		return nil, errs.New(errs.KindInterrupted, "the server is stopping")
	}
	if done == nil {
		done = make(chan struct{})
		c.inflight = done
		started := c.now()
		c.running.Go(func() {
			lctx, cancel := context.WithTimeout(c.ctx, latestLookupTimeout)
			defer cancel()
			doc, err := c.lookup(lctx)
			c.mu.Lock()
			defer c.mu.Unlock()
			c.inflight = nil
			close(done)
			c.storeLocked(doc, err, started)
		})
	}
	c.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.doc, c.err
}

// close waits for the running look-up and lets no other start.
func (c *latestCache) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.running.Wait()
}

// store records an answer whose look-up started at at (the scheduler's
// checks make one too).
func (c *latestCache) store(doc *LatestDocument, err error, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.storeLocked(doc, err, at)
}

func (c *latestCache) storeLocked(doc *LatestDocument, err error, at time.Time) {
	if at.Before(c.at) {
		return // an older look-up does not replace a newer answer
	}
	// A slow look-up's answer is as fresh as its end, not its start: dated
	// from the start, one slower than ttl would be stale when stored and
	// every request would start another.
	c.doc, c.err, c.at, c.stored = doc, err, at, c.now()
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
