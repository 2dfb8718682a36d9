package qemu

import (
	"net"
	"net/netip"
	"strings"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// GuestProxy returns the address at which the guest reaches the HTTP proxy
// proxy (host:port, as --proxy takes it, or ""). The guest reaches other
// hosts as this host does (through passt), so the proxy is used as is. It
// never reaches this host's loopback (passt runs with --no-map-gw), so a
// proxy there is a usage error; so is a proxy with isolated, which reaches
// nothing.
func GuestProxy(proxy string, isolated bool) (string, error) {
	if proxy == "" {
		return "", nil
	}
	if isolated {
		return "", errs.Usage("--proxy %s with --isolated: an isolated guest reaches nothing, a proxy included; drop one of them", proxy)
	}
	host, _, err := net.SplitHostPort(proxy)
	if err != nil {
		return "", errs.Usage("--proxy %q: use host:port", proxy)
	}
	if ip, err := netip.ParseAddr(host); strings.EqualFold(host, "localhost") || (err == nil && ip.IsLoopback()) {
		return "", errs.Usage("--proxy %s: the local builder's guest does not reach this host's loopback; make the proxy listen on an address of this host the guest can reach (its LAN address) and pass that", proxy)
	}
	return proxy, nil
}
