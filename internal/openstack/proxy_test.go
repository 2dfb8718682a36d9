package openstack

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// WithProxy sends every request of gophercloud's client through the proxy:
// the proxy on 127.0.0.1 receives the token request for an auth_url
// nothing listens at (0.0.0.0 on a closed port: refused if dialled
// directly) and refuses it, which the client reports as an auth error.
func TestConnectWithProxy(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.String())
		mu.Unlock()
		http.Error(w, `{"error": {"code": 401, "message": "no"}}`, http.StatusUnauthorized)
	}))
	defer proxy.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	authURL := fmt.Sprintf("http://0.0.0.0:%d/v3", port)
	pu, _ := url.Parse(proxy.URL)
	cfg := &CloudConfig{Name: "p", Path: "memory", AuthOptions: gophercloud.AuthOptions{
		IdentityEndpoint: authURL, Username: "u", Password: "pw", DomainName: "Default",
	}}
	_, err = ConnectConfig(context.Background(), cfg, WithProxy(http.ProxyURL(pu)))
	mu.Lock()
	defer mu.Unlock()
	if !errs.Is(err, errs.KindAuth) || len(seen) != 1 || seen[0] != "POST "+authURL+"/auth/tokens" {
		t.Errorf("err %v, proxy saw %q", err, seen)
	}
}
