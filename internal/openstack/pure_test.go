package openstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// responseTimeout is the error of a request whose response headers did not
// come within the transport's ResponseHeaderTimeout.
func responseTimeout(t *testing.T) error {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer srv.Close()
	tr := &http.Transport{ResponseHeaderTimeout: 10 * time.Millisecond}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
	if err == nil {
		resp.Body.Close()
		t.Fatal("a server that never answers answered")
	}
	return err
}

func TestIsTransient(t *testing.T) {
	code := func(n int) error {
		return fmt.Errorf("wrapped: %w", gophercloud.ErrUnexpectedResponseCode{Actual: n, Method: "GET", URL: "http://127.0.0.1/x"})
	}
	urlErr := func(err error) error { return &url.Error{Op: "Get", URL: "http://127.0.0.1/x", Err: err} }
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"500", code(500), true},
		{"502", code(502), true},
		{"503", code(503), true},
		{"504", code(504), true},
		{"501 never heals", code(501), false},
		{"400", code(400), false},
		{"401", code(401), false},
		{"404", code(404), false},
		{"409", code(409), false},
		{"429", code(429), false},
		{"connection reset", urlErr(&net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}), true},
		{"server closed mid-reply", urlErr(io.ErrUnexpectedEOF), true},
		{"connection closed mid-upload", urlErr(&net.OpError{Op: "write", Err: net.ErrClosed}), true},
		{"network timeout", urlErr(timeoutErr{}), true},
		{"connection refused", urlErr(&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}), false},
		{"our deadline", urlErr(context.DeadlineExceeded), false},
		{"response timeout", responseTimeout(t), true},
		{"cancelled", context.Canceled, false},
		{"plain", errors.New("bad json"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsTransient(tt.err); got != tt.want {
				t.Errorf("IsTransient(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestRetryStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := Retry(ctx, nil, "get", func(context.Context) error {
		calls++
		cancel()
		return gophercloud.ErrUnexpectedResponseCode{Actual: 503}
	})
	if calls != 1 || !errors.Is(err, context.Canceled) {
		t.Fatalf("calls %d, err %v; want 1 call and context.Canceled", calls, err)
	}
}

func TestPickFlavor(t *testing.T) {
	all := []Flavor{
		{ID: "1", Name: "m1.tiny", VCPUs: 1, RAMMiB: 512, DiskGiB: 1},
		{ID: "5", Name: "m1.large", VCPUs: 4, RAMMiB: 8192, DiskGiB: 40},
		{ID: "4", Name: "B.Builder", VCPUs: 2, RAMMiB: 2048, DiskGiB: 20},
		{ID: "3", Name: "a.builder", VCPUs: 2, RAMMiB: 2048, DiskGiB: 20},
		{ID: "2", Name: "small-ram", VCPUs: 2, RAMMiB: 1000, DiskGiB: 20},
		{ID: "6", Name: "volume", VCPUs: 2, RAMMiB: 4096, DiskGiB: 0},
		{ID: "7", Name: "dup", VCPUs: 2, RAMMiB: 4096, DiskGiB: 20},
		{ID: "8", Name: "dup", VCPUs: 2, RAMMiB: 4096, DiskGiB: 20},
	}
	tests := []struct {
		name     string
		flavors  []Flavor
		want     string
		wantID   string
		wantKind errs.Kind
		wantErr  string
	}{
		{name: "smallest fit, ties by name", flavors: all, wantID: "4"},
		{name: "by name, case kept", flavors: all, want: "a.builder", wantID: "3"},
		{name: "by ID", flavors: all, want: "5", wantID: "5"},
		{name: "case matters", flavors: all, want: "A.builder", wantKind: errs.KindNotFound, wantErr: "given flavor A.builder not found"},
		{name: "too small", flavors: all, want: "small-ram", wantKind: errs.KindUsage,
			wantErr: "Required: CPU: 2 MEM: 1024M DISK: 20G. Got: CPU: 2 MEM: 1000M DISK: 20G."},
		{name: "volume-backed never fits", flavors: all, want: "volume", wantKind: errs.KindUsage, wantErr: "DISK: 0G"},
		{name: "ambiguous name", flavors: all, want: "dup", wantKind: errs.KindUsage, wantErr: "7, 8"},
		{name: "none fits", flavors: all[:1], wantKind: errs.KindNotFound, wantErr: "no suitable flavor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 5 { // the answer must not depend on the listing order
				in := slices.Clone(tt.flavors)
				rand.Shuffle(len(in), func(i, j int) { in[i], in[j] = in[j], in[i] })
				f, err := pickFlavor(in, tt.want)
				if tt.wantErr != "" {
					if err == nil || errs.KindOf(err) != tt.wantKind || !strings.Contains(err.Error(), tt.wantErr) {
						t.Fatalf("err = %v (kind %v), want kind %v with %q", err, errs.KindOf(err), tt.wantKind, tt.wantErr)
					}
					continue
				}
				if err != nil || f.ID != tt.wantID {
					t.Fatalf("pickFlavor = %+v, %v; want ID %s", f, err, tt.wantID)
				}
			}
		})
	}
}

func TestPickNetwork(t *testing.T) {
	const me = "proj-me"
	nets := []Network{
		{ID: "n-ext", Name: "public", ProjectID: "admin", External: true},
		{ID: "n-shared", Name: "private", ProjectID: "admin", Shared: true},
		{ID: "n-own2", Name: "b-own", ProjectID: me},
		{ID: "n-own1", Name: "c-own", ProjectID: me},
		{ID: "n-v6", Name: "a-v6", ProjectID: me},
		{ID: "n-empty", Name: "a-empty", ProjectID: me},
		{ID: "n-dup1", Name: "dup", ProjectID: me},
		{ID: "n-dup2", Name: "dup", ProjectID: me},
	}
	subs := []Subnet{
		{ID: "s1", NetworkID: "n-ext", IPVersion: 4},
		{ID: "s2", NetworkID: "n-shared", IPVersion: 4},
		{ID: "s3", NetworkID: "n-own2", IPVersion: 4},
		{ID: "s4", NetworkID: "n-own2", IPVersion: 4},
		{ID: "s5", NetworkID: "n-own1", IPVersion: 4},
		{ID: "s6", NetworkID: "n-v6", IPVersion: 6},
	}
	tests := []struct {
		name     string
		nets     []Network
		subs     []Subnet
		want     string
		wantID   string
		wantKind errs.Kind
		wantErr  string
	}{
		{name: "own, one IPv4 subnet, wins", nets: nets, subs: subs, wantID: "n-own1"},
		{name: "then own with several IPv4", nets: nets, subs: slices.DeleteFunc(slices.Clone(subs), func(s Subnet) bool { return s.ID == "s5" }), wantID: "n-own2"},
		{name: "own IPv6-only before shared", nets: nets, subs: []Subnet{subs[0], subs[1], subs[5]}, wantID: "n-v6"},
		{name: "shared before external", nets: nets, subs: []Subnet{subs[0], subs[1]}, wantID: "n-shared"},
		{name: "external as a last resort", nets: nets, subs: subs[:1], wantID: "n-ext"},
		{name: "no subnets", nets: nets, subs: nil, wantKind: errs.KindNotFound, wantErr: "no valid subnets found"},
		{name: "given by name without subnet", nets: nets, subs: subs, want: "a-empty", wantID: "n-empty"},
		{name: "given by ID", nets: nets, subs: subs, want: "n-ext", wantID: "n-ext"},
		{name: "given missing", nets: nets, subs: subs, want: "Private", wantKind: errs.KindNotFound, wantErr: "given network Private not found"},
		{name: "given ambiguous", nets: nets, subs: subs, want: "dup", wantKind: errs.KindUsage, wantErr: "n-dup1, n-dup2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 5 {
				in := slices.Clone(tt.nets)
				rand.Shuffle(len(in), func(i, j int) { in[i], in[j] = in[j], in[i] })
				n, err := pickNetwork(in, tt.subs, me, tt.want)
				if tt.wantErr != "" {
					if err == nil || errs.KindOf(err) != tt.wantKind || !strings.Contains(err.Error(), tt.wantErr) {
						t.Fatalf("err = %v (kind %v), want kind %v with %q", err, errs.KindOf(err), tt.wantKind, tt.wantErr)
					}
					continue
				}
				if err != nil || n.ID != tt.wantID {
					t.Fatalf("pickNetwork = %+v, %v; want %s", n, err, tt.wantID)
				}
			}
		})
	}
}

func TestFixedAddress(t *testing.T) {
	a := netip.MustParseAddr
	s := &Server{ID: "s", Name: "b", Addresses: map[string][]Address{
		"net-b": {{Addr: a("fd00::5"), Type: "fixed"}, {Addr: a("10.0.0.5"), Type: "fixed"}},
		"net-a": {{Addr: a("192.0.2.9"), Type: "floating"}, {Addr: a("fd00::9")}},
		"v6":    {{Addr: a("fd00::1"), Type: "fixed"}},
	}}
	tests := []struct {
		network, want string
		wantErr       bool
	}{
		{"net-b", "10.0.0.5", false},
		{"net-a", "fd00::9", false}, // a floating address is never the fixed one
		{"", "10.0.0.5", false},     // IPv4 first, across networks by name
		{"v6", "fd00::1", false},
		{"none", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.network, func(t *testing.T) {
			got, err := FixedAddress(s, tt.network)
			if tt.wantErr {
				if errs.KindOf(err) != errs.KindNotFound {
					t.Fatalf("err = %v, want not found", err)
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Fatalf("FixedAddress = %v, %v; want %s", got, err, tt.want)
			}
		})
	}
}

func TestLastLines(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc\n"},
		{"a\nb\nc", 2, "b\nc"},
		{"a\nb\n", 5, "a\nb\n"},
		{"a\nb\nc\n", 0, "a\nb\nc\n"},
		{"", 3, ""},
	}
	for _, tt := range tests {
		if got := lastLines(tt.in, tt.n); got != tt.want {
			t.Errorf("lastLines(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

func TestImageQuery(t *testing.T) {
	tests := []struct {
		q    ImageQuery
		want string
	}{
		{ImageQuery{}, ""},
		{ImageQuery{Name: "p-noble x64", Status: "active"}, "?name=p-noble+x64&status=active"},
		{ImageQuery{Owner: "p1", Visibility: "all", Tags: []string{"b", "a"},
			Properties: map[string]string{"os_distro": "ubuntu", "grib&x": "1=2"}},
			"?grib%26x=1%3D2&os_distro=ubuntu&owner=p1&tag=b&tag=a&visibility=all"},
	}
	for _, tt := range tests {
		got, err := tt.q.ToImageListQuery()
		if err != nil || got != tt.want {
			t.Errorf("%+v: %q, %v; want %q", tt.q, got, err, tt.want)
		}
	}
}

func TestSortNewestFirst(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ims := []Image{{ID: "b", CreatedAt: t0}, {ID: "z", CreatedAt: t0.Add(-time.Second)}, {ID: "a", CreatedAt: t0}, {ID: "c", CreatedAt: t0.Add(time.Second)}}
	sortNewestFirst(ims)
	var ids []string
	for _, im := range ims {
		ids = append(ids, im.ID)
	}
	if got := strings.Join(ids, ""); got != "cabz" {
		t.Errorf("order %s, want cabz", got)
	}
}
