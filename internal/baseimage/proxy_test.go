package baseimage

import (
	"net/http"
	"net/url"
	"testing"
)

// The default client's transport uses Fetcher.Proxy (the service's
// proxy.host), and the environment's proxy without it.
func TestFetcherProxy(t *testing.T) {
	want := &url.URL{Scheme: "http", Host: "127.0.0.1:3128"}
	for _, tc := range []struct {
		name  string
		proxy func(*http.Request) (*url.URL, error)
		want  *url.URL
	}{
		{"given", http.ProxyURL(want), want},
		{"environment", nil, nil},
	} {
		tr, ok := (&Fetcher{Proxy: tc.proxy}).client().Transport.(*http.Transport)
		if !ok || tr.Proxy == nil {
			t.Fatalf("%s: transport %T without a proxy func", tc.name, tr)
		}
		if tc.want == nil {
			continue // http.ProxyFromEnvironment: its answer depends on this process's environment
		}
		got, err := tr.Proxy(&http.Request{URL: &url.URL{Scheme: "https", Host: "192.0.2.1"}})
		if err != nil || got.String() != tc.want.String() {
			t.Errorf("%s: proxy %v %v, want %v", tc.name, got, err, tc.want)
		}
	}
}
