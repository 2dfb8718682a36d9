package release

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

const (
	testRepo = "canonical/github-actions-runner"
	shaX64   = "1111111111111111111111111111111111111111111111111111111111111111"
	shaARM64 = "2222222222222222222222222222222222222222222222222222222222222222"
	shaARM   = "3333333333333333333333333333333333333333333333333333333333333333"
	digS390X = "4444444444444444444444444444444444444444444444444444444444444444"
	digX64   = "5555555555555555555555555555555555555555555555555555555555555555"
	pinned   = "ABCDEFABCDEFABCDEFABCDEFABCDEFABCDEFABCDEFABCDEFABCDEFABCDEFABCD"
)

// notes imitates actions/runner's releaseNote.md: other 64-hex strings
// (osx, win) come first, so a greedy regexp would pick the wrong one.
func notes(version string, shas map[string]string) string {
	var b strings.Builder
	b.WriteString("## Bugs\n- fixed things\n\n## SHA-256 Checksums\n\n")
	b.WriteString("- actions-runner-osx-x64-" + version + ".zip <!-- BEGIN SHA osx-x64 -->9999999999999999999999999999999999999999999999999999999999999999<!-- END SHA osx-x64 -->\n")
	b.WriteString("- actions-runner-win-x64-" + version + ".zip <!-- BEGIN SHA win-x64 -->8888888888888888888888888888888888888888888888888888888888888888<!-- END SHA win-x64 -->\n")
	for _, arch := range []string{"x64", "arm64", "arm", "s390x", "ppc64le"} {
		if sha, ok := shas[arch]; ok {
			b.WriteString("- actions-runner-linux-" + arch + "-" + version + ".tar.gz <!-- BEGIN SHA linux-" + arch + " -->" + sha + "<!-- END SHA linux-" + arch + " -->\n")
		}
	}
	return b.String()
}

type asset struct {
	Name   string  `json:"name"`
	URL    string  `json:"browser_download_url"`
	Digest *string `json:"digest"`
}

type ghRelease struct {
	TagName string  `json:"tag_name"`
	Body    string  `json:"body"`
	Assets  []asset `json:"assets"`
}

func mkRelease(base, version string, shas map[string]string, digests map[string]string) ghRelease {
	r := ghRelease{TagName: "v" + version, Body: notes(version, shas)}
	for _, arch := range []string{"x64", "arm64", "arm", "s390x", "ppc64le"} {
		name := "actions-runner-linux-" + arch + "-" + version + ".tar.gz"
		a := asset{Name: name, URL: base + "/download/v" + version + "/" + name}
		if d, ok := digests[arch]; ok {
			d := "sha256:" + d
			a.Digest = &d
		}
		r.Assets = append(r.Assets, a)
	}
	return r
}

// releaseServer serves two releases of testRepo on loopback: 2.331.0 (the
// latest) and 2.330.0, plus a tarball whose content does not match what the
// notes state. It counts every request and records the Authorization header.
type releaseServer struct {
	*httptest.Server
	requests  atomic.Int64
	tarballs  atomic.Int64
	lastAuth  atomic.Value
	status    int // if non-zero, every API request answers this status
	rateLimit bool
}

func newReleaseServer(t *testing.T) *releaseServer {
	t.Helper()
	rs := &releaseServer{}
	mux := http.NewServeMux()
	rs.Server = httptest.NewServer(mux)
	t.Cleanup(rs.Close)
	latest := mkRelease(rs.URL, "2.331.0",
		map[string]string{"x64": shaX64, "arm64": shaARM64, "arm": shaARM},
		map[string]string{"x64": digX64, "s390x": digS390X})
	older := mkRelease(rs.URL, "2.330.0", map[string]string{"x64": shaX64}, nil)
	older.Assets = slices.DeleteFunc(older.Assets, func(a asset) bool { return strings.Contains(a.Name, "s390x") })
	serve := func(rel ghRelease) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			rs.requests.Add(1)
			rs.lastAuth.Store(r.Header.Get("Authorization"))
			if rs.status != 0 {
				if rs.rateLimit {
					w.Header().Set("X-RateLimit-Remaining", "0")
				}
				http.Error(w, `{"message":"nope"}`, rs.status)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(rel)
		}
	}
	mux.HandleFunc("GET /repos/canonical/github-actions-runner/releases/latest", serve(latest))
	mux.HandleFunc("GET /repos/canonical/github-actions-runner/releases/tags/v2.331.0", serve(latest))
	mux.HandleFunc("GET /repos/canonical/github-actions-runner/releases/tags/v2.330.0", serve(older))
	mux.HandleFunc("GET /repos/canonical/github-actions-runner/releases/tags/v2.329.0", func(w http.ResponseWriter, r *http.Request) {
		rs.requests.Add(1)
		_ = json.NewEncoder(w).Encode(mkRelease(rs.URL, "2.331.0", nil, nil)) // wrong tag for the path
	})
	mux.HandleFunc("GET /download/", func(w http.ResponseWriter, r *http.Request) {
		rs.tarballs.Add(1)
		_, _ = w.Write([]byte("not the tarball the notes describe"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		rs.requests.Add(1)
		http.NotFound(w, r)
	})
	return rs
}

func TestResolve(t *testing.T) {
	rs := newReleaseServer(t)
	tests := []struct {
		name    string
		version string
		arch    config.Arch
		pinned  string
		want    Release
	}{
		{"latest from notes", "", config.ArchX64, "",
			Release{Repo: testRepo, Version: "2.331.0", Arch: config.ArchX64, SHA256: shaX64,
				URL: rs.URL + "/download/v2.331.0/actions-runner-linux-x64-2.331.0.tar.gz"}},
		{"latest spelled out", "latest", config.ArchARM64, "",
			Release{Repo: testRepo, Version: "2.331.0", Arch: config.ArchARM64, SHA256: shaARM64,
				URL: rs.URL + "/download/v2.331.0/actions-runner-linux-arm64-2.331.0.tar.gz"}},
		{"arm marker is not arm64's", "2.331.0", config.ArchARM, "",
			Release{Repo: testRepo, Version: "2.331.0", Arch: config.ArchARM, SHA256: shaARM,
				URL: rs.URL + "/download/v2.331.0/actions-runner-linux-arm-2.331.0.tar.gz"}},
		{"no marker falls back to the asset digest", "", config.ArchS390X, "",
			Release{Repo: testRepo, Version: "2.331.0", Arch: config.ArchS390X, SHA256: digS390X,
				URL: rs.URL + "/download/v2.331.0/actions-runner-linux-s390x-2.331.0.tar.gz"}},
		{"older tag", "2.330.0", config.ArchX64, "",
			Release{Repo: testRepo, Version: "2.330.0", Arch: config.ArchX64, SHA256: shaX64,
				URL: rs.URL + "/download/v2.330.0/actions-runner-linux-x64-2.330.0.tar.gz"}},
		{"pinned checksum with latest still resolves the version", "", config.ArchPPC64LE, pinned,
			Release{Repo: testRepo, Version: "2.331.0", Arch: config.ArchPPC64LE, SHA256: strings.ToLower(pinned),
				URL: rs.URL + "/download/v2.331.0/actions-runner-linux-ppc64le-2.331.0.tar.gz"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Resolver{APIURL: rs.URL, HTTP: rs.Client()}
			got, err := r.Resolve(context.Background(), tt.version, tt.arch, tt.pinned)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if got != tt.want {
				t.Errorf("Resolve =\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}

// The host does not download the tarball: a wrong SHA in the notes is
// reported as the release states it, and the guest's sha256sum -c fails.
func TestResolveReportsServedSHAWithoutDownloading(t *testing.T) {
	rs := newReleaseServer(t)
	r := &Resolver{APIURL: rs.URL, HTTP: rs.Client()}
	got, err := r.Resolve(context.Background(), "", config.ArchX64, "")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := rs.Client().Get(got.URL)
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	resp.Body.Close()
	sum := sha256.Sum256(body.Bytes())
	if actual := hex.EncodeToString(sum[:]); actual == got.SHA256 {
		t.Fatalf("test setup: served tarball matches the stated SHA")
	}
	if got.SHA256 != shaX64 {
		t.Errorf("SHA256 = %s, want the notes' %s", got.SHA256, shaX64)
	}
	if n := rs.tarballs.Load(); n != 1 { // only the test's own GET above
		t.Errorf("tarball fetched %d times, want 1 (only by the test)", n)
	}
}

func TestResolvePinnedFetchesNothing(t *testing.T) {
	rs := newReleaseServer(t)
	tests := []struct {
		name, downloadBase, wantURL string
	}{
		{"github", "", "https://github.com/canonical/github-actions-runner/releases/download/v2.330.0/actions-runner-linux-s390x-2.330.0.tar.gz"},
		{"mirror", "http://127.0.0.1:9/mirror/", "http://127.0.0.1:9/mirror/v2.330.0/actions-runner-linux-s390x-2.330.0.tar.gz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Resolver{APIURL: rs.URL, HTTP: rs.Client(), DownloadBase: tt.downloadBase}
			got, err := r.Resolve(context.Background(), "2.330.0", config.ArchS390X, pinned)
			if err != nil {
				t.Fatal(err)
			}
			want := Release{Repo: testRepo, Version: "2.330.0", Arch: config.ArchS390X, URL: tt.wantURL, SHA256: strings.ToLower(pinned)}
			if got != want {
				t.Errorf("got %+v, want %+v", got, want)
			}
			if n := rs.requests.Load(); n != 0 {
				t.Errorf("%d requests made, want 0", n)
			}
		})
	}
}

func TestResolveMirrorURL(t *testing.T) {
	rs := newReleaseServer(t)
	r := &Resolver{APIURL: rs.URL, HTTP: rs.Client(), DownloadBase: "http://127.0.0.1:9/m"}
	got, err := r.Resolve(context.Background(), "", config.ArchX64, "")
	if err != nil {
		t.Fatal(err)
	}
	if want := "http://127.0.0.1:9/m/v2.331.0/actions-runner-linux-x64-2.331.0.tar.gz"; got.URL != want {
		t.Errorf("URL = %s, want %s", got.URL, want)
	}
}

func TestResolveErrors(t *testing.T) {
	tests := []struct {
		name         string
		repo         string
		apiURL       string // "" = the test server
		downloadBase string
		status       int
		rateLimit    bool
		version      string
		arch         config.Arch
		pinned       string
		kind         errs.Kind
		contains     []string
	}{
		{name: "neither marker nor digest", arch: config.ArchPPC64LE, kind: errs.KindNotFound,
			contains: []string{"v2.331.0", testRepo, "linux-ppc64le", "--runner-sha256"}},
		{name: "tag not found", version: "2.0.0", arch: config.ArchX64, kind: errs.KindNotFound,
			contains: []string{"v2.0.0", "--runner-version"}},
		{name: "repo without releases", repo: "someone/else", arch: config.ArchX64, kind: errs.KindNotFound,
			contains: []string{"someone/else"}},
		{name: "asset missing", version: "2.330.0", arch: config.ArchS390X, kind: errs.KindNotFound,
			contains: []string{"v2.330.0", "no asset", "actions-runner-linux-s390x-2.330.0.tar.gz"}},
		{name: "older release without SHA", version: "2.330.0", arch: config.ArchPPC64LE, kind: errs.KindNotFound,
			contains: []string{"v2.330.0", "no SHA-256", "--runner-sha256"}},
		{name: "401", status: http.StatusUnauthorized, arch: config.ArchX64, kind: errs.KindAuth, contains: []string{"401", "token"}},
		{name: "403", status: http.StatusForbidden, arch: config.ArchX64, kind: errs.KindAuth, contains: []string{"403"}},
		{name: "rate limited", status: http.StatusForbidden, rateLimit: true, arch: config.ArchX64, kind: errs.KindAuth,
			contains: []string{"rate limit", "--runner-sha256"}},
		{name: "server error", status: http.StatusBadGateway, arch: config.ArchX64, kind: errs.KindUnreachable, contains: []string{"502"}},
		{name: "nothing listening", apiURL: "http://127.0.0.1:1", arch: config.ArchX64, kind: errs.KindUnreachable},
		{name: "tag mismatch", version: "2.329.0", arch: config.ArchX64, kind: errs.KindUnreachable, contains: []string{"v2.331.0"}},
		{name: "version with v", version: "v2.330.0", arch: config.ArchX64, kind: errs.KindUsage, contains: []string{"--runner-version"}},
		{name: "version too short", version: "2.330", arch: config.ArchX64, kind: errs.KindUsage, contains: []string{"X.Y.Z"}},
		{name: "short sha", version: "2.330.0", pinned: "abc", arch: config.ArchX64, kind: errs.KindUsage, contains: []string{"--runner-sha256"}},
		{name: "non-hex sha", version: "2.330.0", pinned: strings.Repeat("g", 64), arch: config.ArchX64, kind: errs.KindUsage},
		{name: "alias arch", arch: config.Arch("amd64"), kind: errs.KindUsage, contains: []string{"--arch"}},
		{name: "bad repo", repo: "../etc", arch: config.ArchX64, kind: errs.KindUsage, contains: []string{"owner/name"}},
		{name: "bad api url", apiURL: "ftp://127.0.0.1", arch: config.ArchX64, kind: errs.KindUsage, contains: []string{"API URL"}},
		{name: "api url with credentials", apiURL: "http://me:hunter2@127.0.0.1", arch: config.ArchX64, kind: errs.KindUsage, contains: []string{"without credentials"}},
		{name: "mirror with credentials", downloadBase: "https://me:hunter2@127.0.0.1/m", arch: config.ArchX64, kind: errs.KindUsage, contains: []string{"mirror"}},
		{name: "mirror not http", downloadBase: "file:///srv/runner", version: "2.330.0", pinned: pinned, arch: config.ArchX64, kind: errs.KindUsage, contains: []string{"mirror"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := newReleaseServer(t)
			rs.status, rs.rateLimit = tt.status, tt.rateLimit
			api := tt.apiURL
			if api == "" {
				api = rs.URL
			}
			r := &Resolver{APIURL: api, Repo: tt.repo, HTTP: rs.Client(), DownloadBase: tt.downloadBase}
			_, err := r.Resolve(context.Background(), tt.version, tt.arch, tt.pinned)
			if err == nil {
				t.Fatal("Resolve succeeded, want an error")
			}
			if k := errs.KindOf(err); k != tt.kind {
				t.Errorf("kind = %v, want %v (err: %v)", k, tt.kind, err)
			}
			for _, s := range tt.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error leaks a credential: %q", err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

func TestResolveCanceled(t *testing.T) {
	rs := newReleaseServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := &Resolver{APIURL: rs.URL, HTTP: rs.Client()}
	_, err := r.Resolve(ctx, "", config.ArchX64, "")
	if !errors.Is(err, context.Canceled) || errs.KindOf(err) != errs.KindInterrupted {
		t.Errorf("err = %v (kind %v), want context.Canceled classified as interrupted", err, errs.KindOf(err))
	}
}

func TestTokenSentButNeverLogged(t *testing.T) {
	const token = "ghp_s3cr3tT0k3nValue"
	tests := []struct {
		name, token, wantAuth string
		status                int
	}{
		{"with token", token, "Bearer " + token, 0},
		{"with token refused", token, "Bearer " + token, http.StatusUnauthorized},
		{"without token", "", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := newReleaseServer(t)
			rs.status = tt.status
			var logs bytes.Buffer
			r := &Resolver{APIURL: rs.URL, HTTP: rs.Client(), Token: tt.token,
				Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
			_, err := r.Resolve(context.Background(), "", config.ArchX64, "")
			if got, _ := rs.lastAuth.Load().(string); got != tt.wantAuth {
				t.Errorf("Authorization = %q, want %q", got, tt.wantAuth)
			}
			if (err != nil) != (tt.status != 0) {
				t.Fatalf("err = %v", err)
			}
			if logs.Len() == 0 && err == nil {
				t.Error("nothing logged for a resolution")
			}
			if strings.Contains(logs.String(), token) || (err != nil && strings.Contains(err.Error(), token)) {
				t.Error("the token leaked into logs or the error")
			}
		})
	}
}

func TestLatestVersion(t *testing.T) {
	rs := newReleaseServer(t)
	r := &Resolver{APIURL: rs.URL, HTTP: rs.Client()}
	v, err := r.LatestVersion(context.Background())
	if err != nil || v != "2.331.0" {
		t.Errorf("LatestVersion = %q, %v; want 2.331.0", v, err)
	}
}
