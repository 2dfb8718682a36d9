package openstack

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

func TestConnectClassifies(t *testing.T) {
	// A loopback port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String() + "/v3"
	l.Close()

	tests := []struct {
		name     string
		setup    func(f *fakeCloud, opts *[]Option)
		wantKind errs.Kind
		wantErr  string
	}{
		{name: "good", setup: func(*fakeCloud, *[]Option) {}},
		{name: "wrong password", wantKind: errs.KindAuth, wantErr: "HTTP 401",
			setup: func(f *fakeCloud, _ *[]Option) { f.cfg.AuthOptions.Password = "wrong-" + testPassword }},
		{name: "forbidden", wantKind: errs.KindAuth, wantErr: "HTTP 403",
			setup: func(f *fakeCloud, _ *[]Option) { f.fail = http.StatusForbidden }},
		{name: "keystone 503", wantKind: errs.KindUnreachable, wantErr: "HTTP 503",
			setup: func(f *fakeCloud, _ *[]Option) { f.fail = http.StatusServiceUnavailable }},
		{name: "connection refused", wantKind: errs.KindUnreachable, wantErr: "cannot reach Keystone",
			setup: func(_ *fakeCloud, o *[]Option) { *o = append(*o, WithAuthURL(closed)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeCloud(t)
			var opts []Option
			tt.setup(f, &opts)
			c, err := ConnectConfig(context.Background(), f.cfg, opts...)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.ProjectID() != "proj-1" || c.Name() != "fake" {
					t.Errorf("project %q name %q", c.ProjectID(), c.Name())
				}
				return
			}
			if err == nil {
				t.Fatal("connected, want an error")
			}
			if k := errs.KindOf(err); k != tt.wantKind {
				t.Errorf("kind %v, want %v: %v", k, tt.wantKind, err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), testPassword) {
				t.Errorf("error %q: want %q in it and no password", err, tt.wantErr)
			}
		})
	}
}

func TestWaitServer(t *testing.T) {
	type step struct {
		code   int
		status string
		fault  string
	}
	tests := []struct {
		name      string
		target    string
		steps     []step // answers in order; the last repeats
		wantKind  errs.Kind
		wantErr   string
		wantCalls int
	}{
		{name: "active after build", target: StatusActive,
			steps: []step{{200, "BUILD", ""}, {200, "BUILD", ""}, {200, "ACTIVE", ""}}, wantCalls: 3},
		{name: "ERROR fails at once with the fault", target: StatusActive,
			steps:    []step{{200, "BUILD", ""}, {200, "ERROR", "No valid host was found. There are not enough hosts available."}},
			wantKind: errs.KindBuild, wantErr: "No valid host was found", wantCalls: 2},
		{name: "ERROR without fault", target: StatusShutoff, steps: []step{{200, "ERROR", ""}},
			wantKind: errs.KindBuild, wantErr: "no fault message", wantCalls: 1},
		{name: "5xx polled through", target: StatusShutoff,
			steps: []step{{503, "", ""}, {500, "", ""}, {200, "SHUTOFF", ""}}, wantCalls: 3},
		{name: "ERROR does not stop a delete wait", target: StatusDeleted,
			steps: []step{{200, "ERROR", "boom"}, {404, "", ""}}, wantCalls: 2},
		{name: "gone counts as deleted", target: StatusDeleted,
			steps: []step{{200, "ACTIVE", ""}, {404, "", ""}}, wantCalls: 2},
		{name: "Nova's DELETED status is not yet gone", target: StatusDeleted,
			steps: []step{{200, "DELETED", ""}, {200, "DELETED", ""}, {404, "", ""}}, wantCalls: 3},
		{name: "gone is not found otherwise", target: StatusActive, steps: []step{{404, "", ""}},
			wantKind: errs.KindNotFound, wantErr: "not found", wantCalls: 1},
		{name: "401 stops", target: StatusActive, steps: []step{{403, "", ""}},
			wantKind: errs.KindAuth, wantErr: "refused", wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeCloud(t)
			var calls atomic.Int32
			f.mux.HandleFunc("GET /compute/v2.1/servers/s1", func(w http.ResponseWriter, r *http.Request) {
				if got := r.Header.Get("X-OpenStack-Nova-API-Version"); got != ComputeMicroversion {
					t.Errorf("microversion header %q", got)
				}
				n := int(calls.Add(1)) - 1
				s := tt.steps[min(n, len(tt.steps)-1)]
				if s.code != 200 {
					http.Error(w, `{"itemNotFound": {"message": "x"}}`, s.code)
					return
				}
				serveJSON(w, 200, serverJSON("s1", s.status, s.fault))
			})
			_, err := f.connect(t).WaitServer(context.Background(), "s1", tt.target)
			if got := int(calls.Load()); got != tt.wantCalls {
				t.Errorf("%d GETs, want %d", got, tt.wantCalls)
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || errs.KindOf(err) != tt.wantKind || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v (kind %v), want kind %v containing %q", err, errs.KindOf(err), tt.wantKind, tt.wantErr)
			}
		})
	}
}

func TestWaitServerEndsWithContext(t *testing.T) {
	f := newFakeCloud(t)
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int32
	f.mux.HandleFunc("GET /compute/v2.1/servers/s1", func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 2 {
			cancel()
		}
		serveJSON(w, 200, serverJSON("s1", "BUILD", ""))
	})
	_, err := f.connect(t).WaitServer(ctx, "s1", StatusActive)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "status BUILD") {
		t.Fatalf("err = %v, want context.Canceled naming the last status", err)
	}
}

func TestRetryOnlyTransient(t *testing.T) {
	tests := []struct {
		name      string
		codes     []int // answers in order; 200 ends
		wantCalls int
		wantKind  errs.Kind
		wantOK    bool
	}{
		{"two 5xx then ok", []int{500, 502, 200}, 3, errs.KindInternal, true},
		{"501 is final", []int{501, 200}, 1, errs.KindInternal, false},
		{"404 is final", []int{404, 200}, 1, errs.KindNotFound, false},
		{"400 is final", []int{400, 200}, 1, errs.KindInternal, false},
		{"gives up after 5", []int{503, 503, 503, 503, 503, 503, 200}, 5, errs.KindInternal, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeCloud(t)
			var calls atomic.Int32
			f.mux.HandleFunc("GET /image/v2/images/i1", func(w http.ResponseWriter, r *http.Request) {
				n := int(calls.Add(1)) - 1
				if code := tt.codes[n]; code != 200 {
					http.Error(w, "boom", code)
					return
				}
				serveJSON(w, 200, imageJSON("i1", "img", "active", "2026-01-01T00:00:00Z"))
			})
			im, err := f.connect(t).GetImage(context.Background(), "i1")
			if got := int(calls.Load()); got != tt.wantCalls {
				t.Errorf("%d calls, want %d", got, tt.wantCalls)
			}
			if tt.wantOK {
				if err != nil || im.HashAlgo != "sha512" || im.HashValue != "def" || im.SizeBytes != 1048576 ||
					im.Properties["architecture"] != "x86_64" {
					t.Fatalf("GetImage = %+v, %v", im, err)
				}
				return
			}
			if err == nil || errs.KindOf(err) != tt.wantKind {
				t.Fatalf("err = %v (kind %v), want kind %v", err, errs.KindOf(err), tt.wantKind)
			}
		})
	}
}

func TestListImagesQueryAndOrder(t *testing.T) {
	f := newFakeCloud(t)
	f.mux.HandleFunc("GET /image/v2/images", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("name") != "p-noble-x64" || q.Get("grib_published") != "true" || q.Get("status") != "active" {
			t.Errorf("query %q", r.URL.RawQuery)
		}
		serveJSON(w, 200, map[string]any{"images": []any{
			imageJSON("b", "p-noble-x64", "active", "2026-01-01T00:00:00Z"),
			imageJSON("c", "p-noble-x64", "active", "2026-01-02T00:00:00Z"),
			imageJSON("a", "p-noble-x64", "active", "2026-01-01T00:00:00Z"),
			imageJSON("d", "p-noble-x64-other", "active", "2026-01-03T00:00:00Z"),
		}})
	})
	c := f.connect(t)
	ims, err := c.ListImages(context.Background(), ImageQuery{Name: "p-noble-x64", Status: ImageActive,
		Properties: map[string]string{"grib_published": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, im := range ims {
		ids = append(ids, im.ID)
	}
	if got := strings.Join(ids, ","); got != "d,c,a,b" {
		t.Errorf("order %s, want d,c,a,b (newest first, ties by ID)", got)
	}
}

// IncludeHidden lists twice, the second time with os_hidden=true (Glance
// lists either kind, never both), and returns both lists as one.
func TestListImagesIncludeHidden(t *testing.T) {
	tests := []struct {
		name    string
		include bool
		want    string
		queries int
	}{
		{"visible only", false, "v", 1},
		{"hidden too", true, "h,v", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeCloud(t)
			queries := 0
			f.mux.HandleFunc("GET /image/v2/images", func(w http.ResponseWriter, r *http.Request) {
				queries++
				if r.URL.Query().Get("name") != "img" {
					t.Errorf("query %q lost the name", r.URL.RawQuery)
				}
				if r.URL.Query().Get("os_hidden") == "true" {
					serveJSON(w, 200, map[string]any{"images": []any{imageJSON("h", "img", "queued", "2026-01-02T00:00:00Z")}})
					return
				}
				serveJSON(w, 200, map[string]any{"images": []any{imageJSON("v", "img", "active", "2026-01-01T00:00:00Z")}})
			})
			ims, err := f.connect(t).ListImages(context.Background(), ImageQuery{Name: "img", IncludeHidden: tt.include})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, im := range ims {
				got = append(got, im.ID)
			}
			if strings.Join(got, ",") != tt.want || queries != tt.queries {
				t.Errorf("got %v in %d queries, want %s in %d", got, queries, tt.want, tt.queries)
			}
		})
	}
}

func TestUpdateImagePatch(t *testing.T) {
	f := newFakeCloud(t)
	var patch []map[string]any
	f.mux.HandleFunc("GET /image/v2/images/i1", func(w http.ResponseWriter, r *http.Request) {
		serveJSON(w, 200, imageJSON("i1", "img", "active", "2026-01-01T00:00:00Z"))
	})
	f.mux.HandleFunc("PATCH /image/v2/images/i1", func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); ct != "application/openstack-images-v2.1-json-patch" {
			t.Errorf("content type %q", ct)
		}
		if err := json.NewDecoder(r.Body).Decode(&patch); err != nil {
			t.Error(err)
		}
		serveJSON(w, 200, imageJSON("i1", "img", "active", "2026-01-01T00:00:00Z"))
	})
	err := f.connect(t).UpdateImage(context.Background(), "i1", ImageUpdate{
		Properties: map[string]string{"architecture": "aarch64", "os_distro": "ubuntu"}, Visibility: "public", Unhide: true})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(patch)
	want := `[{"op":"replace","path":"/architecture","value":"aarch64"},{"op":"add","path":"/os_distro","value":"ubuntu"},{"op":"replace","path":"/visibility","value":"public"},{"op":"replace","path":"/os_hidden","value":false}]`
	if string(got) != want {
		t.Errorf("patch\n got %s\nwant %s", got, want)
	}
}

func TestUploadImageRewinds(t *testing.T) {
	f := newFakeCloud(t)
	var got []byte
	f.mux.HandleFunc("PUT /image/v2/images/i1/file", func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.ReadAll(r.Body)
		w.WriteHeader(http.StatusNoContent)
	})
	data := strings.NewReader("0123456789")
	if _, err := data.Seek(4, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if err := f.connect(t).UploadImage(context.Background(), "i1", data); err != nil {
		t.Fatal(err)
	}
	if string(got) != "0123456789" {
		t.Errorf("uploaded %q, want the whole data", got)
	}
}

func TestWaitImageActive(t *testing.T) {
	tests := []struct {
		name     string
		statuses []string
		wantKind errs.Kind
		wantOK   bool
	}{
		{"queued saving active", []string{"queued", "saving", "active"}, 0, true},
		{"killed fails", []string{"saving", "killed"}, errs.KindPublish, false},
		{"deleted fails", []string{"deleted"}, errs.KindPublish, false},
		{"gone fails", []string{"404"}, errs.KindPublish, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeCloud(t)
			var calls atomic.Int32
			f.mux.HandleFunc("GET /image/v2/images/i1", func(w http.ResponseWriter, r *http.Request) {
				n := int(calls.Add(1)) - 1
				s := tt.statuses[min(n, len(tt.statuses)-1)]
				if s == "404" {
					http.Error(w, "gone", 404)
					return
				}
				serveJSON(w, 200, imageJSON("i1", "img", s, "2026-01-01T00:00:00Z"))
			})
			im, err := f.connect(t).WaitImageActive(context.Background(), "i1")
			if tt.wantOK {
				if err != nil || im.Status != ImageActive {
					t.Fatalf("= %+v, %v", im, err)
				}
				return
			}
			if errs.KindOf(err) != tt.wantKind || int(calls.Load()) != len(tt.statuses) {
				t.Fatalf("err %v (kind %v) after %d calls; want kind %v after %d", err, errs.KindOf(err), calls.Load(), tt.wantKind, len(tt.statuses))
			}
		})
	}
}

func TestEndpointOverride(t *testing.T) {
	f := newFakeCloud(t)
	other := newFakeCloud(t)
	other.mux.HandleFunc("GET /elsewhere/servers/s1", func(w http.ResponseWriter, r *http.Request) {
		serveJSON(w, 200, serverJSON("s1", "ACTIVE", ""))
	})
	c, err := ConnectConfig(context.Background(), f.cfg, WithEndpoint("compute", other.srv.URL+"/elsewhere"))
	if err != nil {
		t.Fatal(err)
	}
	if s, err := c.GetServer(context.Background(), "s1"); err != nil || s.Status != StatusActive {
		t.Fatalf("GetServer through the override = %+v, %v", s, err)
	}
}
