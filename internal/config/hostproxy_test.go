package config

import (
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// proxy.host picks the proxy by scheme and honours no_proxy; loopback is
// reached directly; zero means the environment's proxy (ProxyFromEnvironment).
func TestHostProxyFunc(t *testing.T) {
	p := HostProxy{HTTP: "http://127.0.0.1:3128", HTTPS: "http://127.0.0.1:3129", NoProxy: "10.0.0.0/8,.internal"}
	f := p.ProxyFunc()
	for _, tc := range []struct{ target, want string }{
		{"http://192.0.2.1/x", "http://127.0.0.1:3128"},
		{"https://192.0.2.1/x", "http://127.0.0.1:3129"},
		{"https://10.1.2.3:5000/v3", ""},
		{"https://keystone.internal/v3", ""},
		{"http://127.0.0.1:5000/v3", ""},
	} {
		u, err := f(&http.Request{URL: mustURL(t, tc.target)})
		got := ""
		if u != nil {
			got = u.String()
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: proxy %q %v, want %q", tc.target, got, err, tc.want)
		}
	}
	if reflect.ValueOf((HostProxy{}).ProxyFunc()).Pointer() != reflect.ValueOf(http.ProxyFromEnvironment).Pointer() {
		t.Error("zero HostProxy: want http.ProxyFromEnvironment")
	}
	if tr := p.Transport(); tr.Proxy == nil || tr == http.DefaultTransport {
		t.Error("Transport: want a clone with the proxy")
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// Env and Getenv give children the configured variables, both cases, and
// nothing of the environment's proxy once proxy.host is set.
func TestHostProxyEnv(t *testing.T) {
	p := HostProxy{HTTP: "http://127.0.0.1:3128", NoProxy: ".internal"}
	if got, want := p.Env(), []string{"http_proxy=http://127.0.0.1:3128", "HTTP_PROXY=http://127.0.0.1:3128", "no_proxy=.internal", "NO_PROXY=.internal"}; !slices.Equal(got, want) {
		t.Errorf("Env %q, want %q", got, want)
	}
	if (HostProxy{}).Env() != nil {
		t.Error("zero Env: want nil")
	}
	env := Getenv([]string{"PATH=/bin", "https_proxy=http://127.0.0.9:1", "http_proxy=http://127.0.0.9:2"})
	got := ChildEnv(p.Getenv(env), NetworkEnv()...)
	if want := []string{"PATH=/bin", "http_proxy=http://127.0.0.1:3128", "no_proxy=.internal", "HTTP_PROXY=http://127.0.0.1:3128", "NO_PROXY=.internal"}; !slices.Equal(got, want) {
		t.Errorf("child env %q, want %q", got, want)
	}
	if got := ChildEnv((HostProxy{}).Getenv(env), NetworkEnv()...); !slices.Contains(got, "https_proxy=http://127.0.0.9:1") {
		t.Errorf("zero: child env %q, want the environment's", got)
	}
}

func TestValidateHostProxy(t *testing.T) {
	for _, tc := range []struct {
		p       HostProxy
		setting string // "" = accepted
		msg     string
	}{
		{HostProxy{}, "", ""},
		{HostProxy{HTTP: "http://squid.internal:3128", HTTPS: "https://127.0.0.1:3129/", NoProxy: " 10.0.0.0/8, .internal ,localhost"}, "", ""},
		{HostProxy{HTTP: "squid:3128"}, "host_http_proxy", `"squid:3128": use http://HOST:PORT`},
		{HostProxy{HTTPS: "socks5://127.0.0.1:1080"}, "host_https_proxy", `"socks5://127.0.0.1:1080": use http://HOST:PORT`},
		{HostProxy{HTTPS: "http://u:pw-secret@127.0.0.1:3128"}, "host_https_proxy", `"http://xxxxx@127.0.0.1:3128": remove the credentials`},
		{HostProxy{HTTP: "http://127.0.0.1:3128/p"}, "host_http_proxy", "use http://HOST:PORT"},
		{HostProxy{HTTP: "http://127.0.0.1:3128\n"}, "host_http_proxy", `"<unprintable>"`},
		{HostProxy{NoProxy: ".internal"}, "host_no_proxy", "needs --host-http-proxy or --host-https-proxy"},
		{HostProxy{HTTP: "http://127.0.0.1:3128", NoProxy: "a\tb"}, "host_no_proxy", "use a comma-separated list"},
	} {
		err := ValidateHostProxy(tc.p)
		var se *SettingError
		switch {
		case tc.setting == "" && err != nil:
			t.Errorf("%+v: %v", tc.p, err)
		case tc.setting == "":
		case !errors.As(err, &se) || se.Setting != tc.setting || !strings.Contains(err.Error(), tc.msg) || strings.Contains(err.Error(), "pw-secret"):
			t.Errorf("%+v: %v, want %s: %q", tc.p, err, tc.setting, tc.msg)
		}
	}
}
