package service

import (
	"bytes"
	"fmt"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"

	"github.com/runner-image-builder/github-runner-image-builder/internal/build"
	"github.com/runner-image-builder/github-runner-image-builder/internal/service/install"
)

const metricPrefix = "github_runner_image_builder_"

// Metrics are the builder host's Prometheus metrics. Counters and times
// come from the service state (so a one-shot build under a timer reports
// totals, not just its own run); phase durations are this process's
// observations. serve exposes them on /metrics; a timer-run build writes
// them for node_exporter's textfile collector (WriteTextfile).
type Metrics struct {
	reg   *prometheus.Registry
	phase *prometheus.HistogramVec
	now   func() time.Time
	live  bool // serve: also report image ages, computed when scraped

	mu     sync.Mutex
	state  State
	images []LatestImage
}

// NewMetrics returns the metrics; live adds image ages (computed at each
// scrape, so meaningless in a textfile) and the Go and process collectors.
func NewMetrics(live bool, now func() time.Time) *Metrics {
	if now == nil {
		now = time.Now
	}
	m := &Metrics{reg: prometheus.NewRegistry(), now: now, live: live}
	m.phase = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    metricPrefix + "phase_duration_seconds",
		Help:    "Duration of build phases: build (one cell, retries included), each builder step, callback, base_image_refresh.",
		Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200},
	}, []string{"phase"})
	m.reg.MustRegister(m.phase, stateCollector{m})
	if live {
		m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	return m
}

// ObservePhase records one phase's duration.
func (m *Metrics) ObservePhase(phase string, d time.Duration) {
	if m != nil {
		m.phase.WithLabelValues(phase).Observe(d.Seconds())
	}
}

// ObserveStep records the duration of each build step that succeeded,
// from the step runner's events (a build.Observer; nil m ignores them).
func (m *Metrics) ObserveStep(ev build.Event) {
	if m != nil && ev.Kind == build.StepEnded && ev.Err == nil {
		m.ObservePhase(ev.Step, ev.Took)
	}
}

// SetState publishes a copy of the service state.
func (m *Metrics) SetState(s *State) {
	if m == nil || s == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.state = State{
		Builds: maps.Clone(s.Builds), Cells: maps.Clone(s.Cells),
		LastSuccess: s.LastSuccess, LastBaseRefresh: s.LastBaseRefresh,
	}
}

// SetImages publishes the newest images (for their creation times and ages).
func (m *Metrics) SetImages(images []LatestImage) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.images = slices.Clone(images)
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// TextfilePath is where a build writes its metrics for node_exporter's
// textfile collector ("" when metrics.textfile_dir is not set).
func (c *Config) TextfilePath() string {
	if c.TextfileDir == "" {
		return ""
	}
	return filepath.Join(c.TextfileDir, "github_runner_image_builder_"+strings.ReplaceAll(c.Build.Prefix, ".", "_")+".prom")
}

// WriteTextfile writes the metrics to path atomically, 0644 (node_exporter
// runs as another user); path must end in .prom.
func (m *Metrics) WriteTextfile(path string) error {
	mfs, err := m.reg.Gather()
	if err != nil {
		return fmt.Errorf("gathering metrics: %w", err)
	}
	var buf bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&buf, mf); err != nil {
			return fmt.Errorf("encoding metrics: %w", err)
		}
	}
	return install.WriteAtomic(path, buf.Bytes(), 0o644)
}

var (
	descBuilds = prometheus.NewDesc(metricPrefix+"builds_total",
		"Finished cell builds by result (success, failure, locked).", []string{"result"}, nil)
	descLastSuccess = prometheus.NewDesc(metricPrefix+"last_success_timestamp_seconds",
		"When a build of the whole matrix last succeeded (Unix time).", nil, nil)
	descBaseRefresh = prometheus.NewDesc(metricPrefix+"base_image_refresh_timestamp_seconds",
		"When the base images were last refreshed (Unix time).", nil, nil)
	descCellSuccess = prometheus.NewDesc(metricPrefix+"image_last_success_timestamp_seconds",
		"When the image's last build succeeded (Unix time).", []string{"name"}, nil)
	descCellFailed = prometheus.NewDesc(metricPrefix+"image_last_build_failed",
		"1 when the image's last build failed, else 0.", []string{"name"}, nil)
	descRunner = prometheus.NewDesc(metricPrefix+"runner_version_info",
		"The GitHub runner version installed by the image's last successful build.", []string{"name", "version"}, nil)
	descCreated = prometheus.NewDesc(metricPrefix+"image_created_timestamp_seconds",
		"Creation time of the newest active image (Unix time).", []string{"cloud", "base", "arch", "name"}, nil)
	descAge = prometheus.NewDesc(metricPrefix+"image_age_seconds",
		"Age of the newest active image.", []string{"cloud", "base", "arch", "name"}, nil)
)

// stateCollector reports the metrics derived from the state and images.
type stateCollector struct{ m *Metrics }

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBuilds, descLastSuccess, descBaseRefresh, descCellSuccess, descCellFailed, descRunner, descCreated, descAge} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range []string{resultSuccess, resultFailure, resultLocked} {
		ch <- prometheus.MustNewConstMetric(descBuilds, prometheus.CounterValue, float64(m.state.Builds[r]), r)
	}
	if !m.state.LastSuccess.IsZero() {
		ch <- prometheus.MustNewConstMetric(descLastSuccess, prometheus.GaugeValue, unix(m.state.LastSuccess))
	}
	if !m.state.LastBaseRefresh.IsZero() {
		ch <- prometheus.MustNewConstMetric(descBaseRefresh, prometheus.GaugeValue, unix(m.state.LastBaseRefresh))
	}
	for _, name := range slices.Sorted(maps.Keys(m.state.Cells)) {
		cs := m.state.Cells[name]
		if !cs.LastSuccess.IsZero() {
			ch <- prometheus.MustNewConstMetric(descCellSuccess, prometheus.GaugeValue, unix(cs.LastSuccess), name)
		}
		failed := 0.0
		if cs.Result == resultFailure {
			failed = 1
		}
		ch <- prometheus.MustNewConstMetric(descCellFailed, prometheus.GaugeValue, failed, name)
		if cs.RunnerVersion != "" {
			ch <- prometheus.MustNewConstMetric(descRunner, prometheus.GaugeValue, 1, name, cs.RunnerVersion)
		}
	}
	now := m.now()
	for _, im := range m.images {
		labels := []string{im.Cloud, string(im.Base), string(im.Arch), im.ImageName}
		ch <- prometheus.MustNewConstMetric(descCreated, prometheus.GaugeValue, unix(im.Created), labels...)
		if m.live {
			ch <- prometheus.MustNewConstMetric(descAge, prometheus.GaugeValue, now.Sub(im.Created).Seconds(), labels...)
		}
	}
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
