package config

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpproxy"
)

// HostProxy is the builder host's own proxy (the service's proxy.host):
// what every HTTP client of the tool (OpenStack APIs, the GitHub API, the
// base image mirror, the script URL) and the programs setup installs
// (units, cron line, callbacks) go through. It is not the guest's proxy
// (RunSpec.Proxy). The zero value means the environment's proxy variables,
// as before.
type HostProxy struct {
	HTTP    string // proxy of http:// requests, an http(s) URL, or ""
	HTTPS   string // proxy of https:// requests, or ""
	NoProxy string // hosts and domains reached directly (no_proxy syntax)
}

// IsZero reports whether no host proxy is configured.
func (p HostProxy) IsZero() bool { return p == HostProxy{} }

// ProxyFunc is the Proxy of an http.Transport: the environment's
// (http.ProxyFromEnvironment) when p is zero, else p's settings alone, with
// the no_proxy rules of the environment's (loopback is always reached
// directly).
func (p HostProxy) ProxyFunc() func(*http.Request) (*url.URL, error) {
	if p.IsZero() {
		return http.ProxyFromEnvironment
	}
	c := httpproxy.Config{HTTPProxy: p.HTTP, HTTPSProxy: p.HTTPS, NoProxy: p.NoProxy}
	f := c.ProxyFunc()
	return func(r *http.Request) (*url.URL, error) { return f(r.URL) }
}

// Transport is a clone of http.DefaultTransport whose Proxy is ProxyFunc.
func (p HostProxy) Transport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = p.ProxyFunc()
	return tr
}

// Env is p as the environment variables of a child or a unit (lower and
// upper case, as programs read either), KEY=VALUE; nil when p is zero.
func (p HostProxy) Env() []string {
	var env []string
	for _, kv := range [][2]string{{"http_proxy", p.HTTP}, {"https_proxy", p.HTTPS}, {"no_proxy", p.NoProxy}} {
		if kv[1] != "" {
			env = append(env, kv[0]+"="+kv[1], strings.ToUpper(kv[0])+"="+kv[1])
		}
	}
	return env
}

// Getenv is getenv with p's variables in place of the environment's proxy
// variables when p is set (a child then sees the configured proxy, and not
// a different one from the environment); getenv itself when p is zero.
func (p HostProxy) Getenv(getenv func(string) string) func(string) string {
	if p.IsZero() {
		return getenv
	}
	return func(key string) string {
		switch key {
		case "http_proxy", "HTTP_PROXY":
			return p.HTTP
		case "https_proxy", "HTTPS_PROXY":
			return p.HTTPS
		case "no_proxy", "NO_PROXY":
			return p.NoProxy
		}
		return getenv(key)
	}
}

// ValidateHostProxy checks proxy.host: each proxy an http:// or https://
// URL with a host and a port-or-default and without credentials (they
// would show in logs, unit files and process environments), no_proxy a
// comma-separated list without spaces inside an entry.
func ValidateHostProxy(p HostProxy) error {
	for _, f := range []struct{ id, v string }{{"host_http_proxy", p.HTTP}, {"host_https_proxy", p.HTTPS}} {
		if f.v == "" {
			continue
		}
		u, err := url.Parse(f.v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return settingErr(f.id, fmt.Sprintf("%q", redactURL(f.v)), "use http://HOST:PORT (or https://), e.g. http://squid.internal:3128")
		}
		if u.User != nil {
			return settingErr(f.id, fmt.Sprintf("%q", redactURL(f.v)), "remove the credentials from the URL (they would show in logs and unit files)")
		}
	}
	if p.NoProxy != "" && p.HTTP == "" && p.HTTPS == "" {
		return settingErr("host_no_proxy", "", "needs {host_http_proxy} or {host_https_proxy}")
	}
	for item := range strings.SplitSeq(p.NoProxy, ",") {
		if item = strings.TrimSpace(item); strings.ContainsFunc(item, isSpaceOrControl) {
			return settingErr("host_no_proxy", fmt.Sprintf("%q", item), "use a comma-separated list of hosts, domains and CIDRs, e.g. 10.0.0.0/8,.internal")
		}
	}
	return nil
}

func isSpaceOrControl(r rune) bool { return r <= ' ' || r == 0x7f }
