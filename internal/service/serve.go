package service

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// ServeOptions change Serve.
type ServeOptions struct {
	// NoSchedule serves HTTP only: no build is ever started.
	NoSchedule bool
	// LatestTTL is how long GET /v1/images/latest reuses a look-up (default 30s).
	LatestTTL time.Duration
	// ShutdownTimeout bounds the HTTP shutdown (default 10s).
	ShutdownTimeout time.Duration
}

// Serve runs the builder host as a daemon on ln until ctx ends: every
// Config.CheckInterval (and once at start) it builds the cells that are
// due (Build with IfDue), and it answers
//
//	GET /healthz            200 and a JSON status
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
		opts.LatestTTL = 30 * time.Second
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 10 * time.Second
	}
	if dir, err := s.Config.serviceDir(s.getenv); err == nil {
		if st, err := (stateStore{dir: dir}).Load(); err == nil {
			s.Metrics.SetState(st)
		}
	}
	h := &handlers{s: s, ttl: opts.LatestTTL, started: s.now()}
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
	log := s.log()
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
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return errs.Wrap(errs.KindInternal, serveErr, "serving HTTP on %s", ln.Addr())
	}
	log.Info("stopped")
	return nil
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
	ttl     time.Duration
	started time.Time

	mu        sync.Mutex
	building  bool
	lastCheck time.Time
	lastErr   string
	doc       *LatestDocument
	docAt     time.Time
}

func (h *handlers) setBuilding(b bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.building = b
}

func (h *handlers) checked(rep *Report, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastCheck = h.s.now()
	h.lastErr = ""
	if err != nil {
		h.lastErr = oneLine(err.Error())
	}
	if rep != nil && rep.Latest != nil {
		h.doc, h.docAt = rep.Latest, h.s.now()
	}
}

type healthStatus struct {
	Status    string    `json:"status"`
	Started   time.Time `json:"started"`
	Building  bool      `json:"building"`
	LastCheck time.Time `json:"last_check,omitzero"`
	LastError string    `json:"last_error,omitempty"`
}

func (h *handlers) health(w http.ResponseWriter, _ *http.Request) {
	h.mu.Lock()
	st := healthStatus{Status: "ok", Started: h.started, Building: h.building, LastCheck: h.lastCheck, LastError: h.lastErr}
	h.mu.Unlock()
	writeJSON(w, http.StatusOK, st)
}

// latest answers from a look-up at most ttl old; look-ups are serialised.
func (h *handlers) latest(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.doc == nil || h.s.now().Sub(h.docAt) > h.ttl {
		ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
		defer cancel()
		images, err := h.s.Latest(ctx)
		if err != nil {
			h.s.log().Error("GET /v1/images/latest", "error", err)
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": oneLine(err.Error())})
			return
		}
		h.s.Metrics.SetImages(images)
		doc := NewLatestDocument(images)
		h.doc, h.docAt = &doc, h.s.now()
	}
	writeJSON(w, http.StatusOK, h.doc)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
