package openstack

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/gophercloud/gophercloud/v2"
)

// fakeCloud serves a minimal Keystone on loopback whose catalog points the
// compute, image and network services at mux (under /compute/v2.1/,
// /image/ and /network/). It is for the cases a real cloud cannot show
// on demand (a 5xx, a fault message); the rest is tested against the real
// stack (integration_test.go).
type fakeCloud struct {
	srv   *httptest.Server
	mux   *http.ServeMux
	cfg   *CloudConfig
	fail  int          // status Keystone answers with, 0 for success
	auths atomic.Int32 // authentications asked for
}

func newFakeCloud(t *testing.T) *fakeCloud { t.Helper(); return startFakeCloud(t, false) }

// startFakeCloud is newFakeCloud, served over TLS (httptest's self-signed
// certificate, which no client trusts by default) when useTLS.
func startFakeCloud(t *testing.T, useTLS bool) *fakeCloud {
	t.Helper()
	f := &fakeCloud{mux: http.NewServeMux()}
	f.srv = httptest.NewUnstartedServer(f.mux)
	if useTLS {
		// The refused handshakes are what the TLS tests expect: not news.
		f.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
		f.srv.StartTLS()
	} else {
		f.srv.Start()
	}
	t.Cleanup(f.srv.Close)
	f.mux.HandleFunc("POST /v3/auth/tokens", func(w http.ResponseWriter, r *http.Request) {
		f.auths.Add(1)
		if f.fail != 0 {
			http.Error(w, `{"error": {"message": "no"}}`, f.fail)
			return
		}
		var req struct {
			Auth struct {
				Identity struct {
					Password struct {
						User struct {
							Password string `json:"password"`
						} `json:"user"`
					} `json:"password"`
				} `json:"identity"`
			} `json:"auth"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Auth.Identity.Password.User.Password != testPassword {
			http.Error(w, `{"error": {"code": 401, "message": "The request you have made requires authentication."}}`, http.StatusUnauthorized)
			return
		}
		ep := func(typ, path string) map[string]any {
			return map[string]any{"type": typ, "name": typ, "endpoints": []map[string]any{{
				"interface": "public", "region": "RegionOne", "region_id": "RegionOne", "url": f.srv.URL + path,
			}}}
		}
		w.Header().Set("X-Subject-Token", "tok")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]any{"token": map[string]any{
			"expires_at": "2099-01-01T00:00:00.000000Z",
			"project":    map[string]any{"id": "proj-1", "name": "ci"},
			"catalog":    []any{ep("compute", "/compute/v2.1"), ep("image", "/image"), ep("network", "/network")},
		}})
	})
	// Version discovery: gophercloud reads these to check each endpoint
	// serves the major version it wants.
	versions := func(id string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			serveJSON(w, http.StatusOK, map[string]any{"versions": []any{map[string]any{"id": id, "status": "CURRENT"}}})
		}
	}
	f.mux.HandleFunc("GET /image/{$}", versions("v2.16"))
	f.mux.HandleFunc("GET /network/{$}", versions("v2.0"))
	f.cfg = &CloudConfig{Name: "fake", Path: "memory", AuthOptions: gophercloud.AuthOptions{
		IdentityEndpoint: f.srv.URL + "/v3", Username: "u", Password: testPassword, DomainName: "Default",
		Scope: &gophercloud.AuthScope{ProjectName: "ci", DomainName: "Default"}, AllowReauth: true,
	}, Endpoint: gophercloud.EndpointOpts{Region: "RegionOne"}}
	return f
}

func (f *fakeCloud) connect(t *testing.T) *Cloud {
	t.Helper()
	c, err := ConnectConfig(context.Background(), f.cfg)
	if err != nil {
		t.Fatalf("connect to fake cloud: %v", err)
	}
	return c
}

// serveJSON answers with status and v as JSON.
func serveJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// serverJSON is a Nova server body.
func serverJSON(id, status, fault string) map[string]any {
	s := map[string]any{"id": id, "name": "srv-" + id, "status": status, "addresses": map[string]any{}}
	if fault != "" {
		s["fault"] = map[string]any{"code": 500, "message": fault, "created": "2026-01-01T00:00:00Z"}
	}
	return map[string]any{"server": s}
}

func imageJSON(id, name, status, created string) map[string]any {
	return map[string]any{"id": id, "name": name, "status": status, "created_at": created,
		"updated_at": created, "visibility": "private", "size": 1048576, "checksum": "abc",
		"os_hash_algo": "sha512", "os_hash_value": "def", "architecture": "x86_64",
		"self": fmt.Sprintf("/v2/images/%s", id)}
}
