package service

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/build"
	"github.com/runner-image-builder/github-runner-image-builder/internal/builder"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/service/install"
)

// The proxy key holds the guest's proxy (a string, as before, or guest:)
// and this host's (host: {http, https, no_proxy}); a refused value names
// its key and line and never shows a credential.
func TestConfigProxyKey(t *testing.T) {
	const base = "cloud: builder\nprefix: grib\nmatrix:\n  arches: [x64]\n"
	for _, tc := range []struct {
		name, yaml string
		guest      string
		host       config.HostProxy
		err        string // "" = accepted
	}{
		{name: "string is the guest's", yaml: "proxy: squid.internal:3128\n", guest: "squid.internal:3128"},
		{name: "absent", yaml: ""},
		{name: "both", yaml: "proxy:\n  guest: squid.internal:3128\n  host:\n    http: http://127.0.0.1:3128\n    https: http://127.0.0.1:3129\n    no_proxy: 10.0.0.0/8,.internal\n",
			guest: "squid.internal:3128", host: config.HostProxy{HTTP: "http://127.0.0.1:3128", HTTPS: "http://127.0.0.1:3129", NoProxy: "10.0.0.0/8,.internal"}},
		{name: "host only", yaml: "proxy: {host: {https: https://127.0.0.1:3129/}}\n", host: config.HostProxy{HTTPS: "https://127.0.0.1:3129/"}},
		{name: "credentials", yaml: "proxy:\n  host:\n    http: http://user:pw-secret@127.0.0.1:3128\n",
			err: `c.yaml:7: proxy.host.http: "http://xxxxx@127.0.0.1:3128": remove the credentials from the URL`},
		{name: "no scheme", yaml: "proxy: {host: {http: 127.0.0.1:3128}}\n",
			err: `c.yaml:5: proxy.host.http: "127.0.0.1:3128": use http://HOST:PORT (or https://)`},
		{name: "a path", yaml: "proxy: {host: {https: \"http://127.0.0.1:3128/x?token=pw-secret\"}}\n",
			err: `c.yaml:5: proxy.host.https: "http://127.0.0.1:3128/x?...": use http://HOST:PORT`},
		{name: "no_proxy alone", yaml: "proxy: {host: {no_proxy: .internal}}\n",
			err: `c.yaml:5: proxy.host.no_proxy: needs proxy.host.http or proxy.host.https`},
		{name: "no_proxy with a space", yaml: "proxy: {host: {http: http://127.0.0.1:3128, no_proxy: \"a b,c\"}}\n",
			err: `c.yaml:5: proxy.host.no_proxy: "a b": use a comma-separated list`},
		{name: "guest in the mapping is checked as before", yaml: "proxy: {guest: \"http://squid:3128\"}\n",
			err: `c.yaml:5: proxy: "http://squid:3128": drop the http:// scheme`},
		{name: "unknown key", yaml: "proxy:\n  hots: {http: http://127.0.0.1:3128}\n", err: `c.yaml:6: proxy: unknown key "hots"`},
		{name: "unknown host key", yaml: "proxy:\n  host:\n    ftp: x\n", err: `c.yaml:7: proxy.host: unknown key "ftp"`},
		{name: "a list", yaml: "proxy: [a]\n", err: `c.yaml:5: proxy: give the guest's proxy as host:port, or {guest:`},
		{name: "host a string", yaml: "proxy: {host: http://127.0.0.1:3128}\n", err: `c.yaml:5: proxy.host: give {http: URL`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig("c.yaml", []byte(base+tc.yaml))
			if tc.err != "" {
				if err == nil || !errs.Is(err, errs.KindUsage) || !strings.Contains(err.Error(), tc.err) ||
					strings.Contains(err.Error(), "pw-secret") || strings.Contains(err.Error(), "\n") {
					t.Fatalf("got %v, want a one-line usage error containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Build.Proxy != tc.guest || c.Build.HostProxy != tc.host {
				t.Errorf("guest %q host %+v, want %q %+v", c.Build.Proxy, c.Build.HostProxy, tc.guest, tc.host)
			}
			if spec := c.specTemplate(Cell{Base: config.BaseNoble, Arch: config.ArchX64}, nil); spec.HostProxy != tc.host || spec.Proxy != tc.guest {
				t.Errorf("a cell's spec has guest %q host %+v", spec.Proxy, spec.HostProxy)
			}
		})
	}
}

const hostProxyYAML = "proxy:\n  guest: squid.internal:3128\n  host:\n    http: http://127.0.0.1:3128\n    https: http://127.0.0.1:3129\n    no_proxy: 10.0.0.0/8,.internal\n"

// setup writes proxy.host into the unit's and the cron line's environment,
// in both cases, and nothing of the guest's proxy.
func TestSetupCarriesHostProxy(t *testing.T) {
	want := [][2]string{{"http_proxy", "http://127.0.0.1:3128"}, {"HTTP_PROXY", "http://127.0.0.1:3128"},
		{"https_proxy", "http://127.0.0.1:3129"}, {"HTTPS_PROXY", "http://127.0.0.1:3129"},
		{"no_proxy", "10.0.0.0/8,.internal"}, {"NO_PROXY", "10.0.0.0/8,.internal"}}
	for _, tc := range []struct {
		name   string
		sched  install.Scheduler
		file   string
		format string // how one variable is written
	}{
		{"systemd", install.Systemd, "etc/systemd/system/github-runner-image-builder-grib.service", "\nEnvironment=%s=%s\n"},
		{"cron", install.Cron, "etc/cron.d/github-runner-image-builder-grib", " %s=%s "},
	} {
		for _, proxied := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s proxied=%v", tc.name, proxied), func(t *testing.T) {
				extra := ""
				if proxied {
					extra = hostProxyYAML
				}
				s, _, _, _ := testService(t, testConfig(t, extra))
				root := t.TempDir()
				if err := os.MkdirAll(filepath.Join(root, "etc/cron.d"), 0o755); err != nil {
					t.Fatal(err)
				}
				o := setupOptions(t, root, tc.sched)
				o.SkipInit = true
				if _, err := s.Setup(t.Context(), o); err != nil {
					t.Fatal(err)
				}
				got := read(t, filepath.Join(root, tc.file))
				for _, kv := range want {
					if line := fmt.Sprintf(tc.format, kv[0], kv[1]); strings.Contains(got, line) != proxied {
						t.Errorf("has %q: %v, want %v:\n%s", line, !proxied, proxied, got)
					}
				}
				if strings.Contains(got, "squid.internal") || (!proxied && strings.Contains(strings.ToLower(got), "_proxy=")) {
					t.Errorf("the guest's proxy or an unset one is in:\n%s", got)
				}
			})
		}
	}
}

// With proxy.host set the callbacks get its values in place of the
// environment's proxy variables (one unset there is unset for them); without
// it, the environment's as before.
func TestCallbackGetsHostProxy(t *testing.T) {
	environ := []string{"http_proxy=http://127.0.0.9:1", "HTTPS_PROXY=http://127.0.0.9:2", "NO_PROXY=env.example"}
	for _, tc := range []struct {
		name      string
		yaml      string
		want, not []string
	}{
		{"configured", "proxy: {host: {http: \"http://127.0.0.1:3128\", no_proxy: \".internal\"}}\n",
			[]string{"http_proxy=http://127.0.0.1:3128", "HTTP_PROXY=http://127.0.0.1:3128", "no_proxy=.internal", "NO_PROXY=.internal"},
			[]string{"127.0.0.9", "HTTPS_PROXY", "https_proxy", "env.example"}},
		{"environment", "", environ, []string{"127.0.0.1:3128"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, _, _, _ := testService(t, callbackConfig(t, dir, tc.yaml))
			s.Environ = append(s.Environ, environ...)
			if _, err := s.Build(t.Context(), BuildOptions{}); err != nil {
				t.Fatal(err)
			}
			env := "\n" + readCall(t, dir, 0, "env")
			for _, w := range tc.want {
				if !strings.Contains(env, "\n"+w+"\n") {
					t.Errorf("the callback lacks %s:%s", w, env)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(env, n) {
					t.Errorf("the callback has %s:%s", n, env)
				}
			}
		})
	}
}

// jobRecorder is a build.Builder that records the jobs it is given and
// publishes as the fake builder does.
type jobRecorder struct {
	fb   *fakeBuilder
	mu   sync.Mutex
	jobs []builder.Job
}

func (r *jobRecorder) Build(ctx context.Context, log *slog.Logger, job builder.Job) ([]config.PublishedImage, error) {
	r.mu.Lock()
	r.jobs = append(r.jobs, job)
	r.mu.Unlock()
	res, err := r.fb.Run(ctx, log, job.Spec, nil)
	return res.Images, err
}

// A service build's HTTP client (here the script fetch of build.Builds)
// goes through proxy.host: the proxy, on 127.0.0.1, receives the request
// for a target nothing listens at and answers it; the build gets the
// proxy's answer. Loopback targets are always reached directly (as with
// the environment's proxy), so the target is 0.0.0.0 at a closed port:
// not loopback for the proxy rules, and refused (on this host) if the
// request went direct.
func TestServiceBuildUsesHostProxy(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.String())
		mu.Unlock()
		fmt.Fprint(w, "echo via-proxy\n")
	}))
	defer proxy.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	target := fmt.Sprintf("http://0.0.0.0:%d/setup.sh", port)

	for _, tc := range []struct {
		name    string
		noProxy string
		proxied bool
	}{
		{"proxied", "", true},
		{"no_proxy", "0.0.0.0", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			seen = nil
			mu.Unlock()
			yaml := fmt.Sprintf("script: {url: %q}\nproxy: {host: {http: %q, no_proxy: %q}}\n", target, proxy.URL, tc.noProxy)
			s, fb, _, _ := testService(t, testConfig(t, yaml))
			rec := &jobRecorder{fb: fb}
			s.Builder = &build.Builds{OpenStack: rec}
			s.Config.RetryAttempts = 1
			rep, err := s.Build(t.Context(), BuildOptions{})
			mu.Lock()
			defer mu.Unlock()
			if !tc.proxied {
				if err == nil || len(seen) != 0 || len(rec.jobs) != 0 {
					t.Fatalf("with no_proxy: err %v, proxy saw %q, %d builds", err, seen, len(rec.jobs))
				}
				return
			}
			if err != nil {
				t.Fatalf("%v %+v", err, rep)
			}
			if len(seen) != 2 || seen[0] != "GET "+target {
				t.Errorf("the proxy saw %q, want one GET %s per cell", seen, target)
			}
			for _, j := range rec.jobs {
				if string(j.Script) != "echo via-proxy\n" {
					t.Errorf("%s got script %q", j.Spec.ImageName, j.Script)
				}
			}
			if len(rec.jobs) != 2 {
				t.Errorf("%d builds, want 2", len(rec.jobs))
			}
		})
	}
}
