package qemu

import (
	"net"
	"net/netip"
	"strings"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// slirpHost is the address at which a user-mode-networked guest reaches the
// host's 127.0.0.1.
const slirpHost = "10.0.2.2"

// GuestProxy returns the address at which the guest reaches the HTTP proxy
// proxy (host:port, as --proxy takes it, or ""). A proxy on this host's
// 127.0.0.1 (or localhost) is reached through slirp's host alias 10.0.2.2;
// any other address is reached as is, through qemu's NAT. An isolated guest
// reaches nothing, so a proxy with isolated is a usage error; so is another
// loopback address, which the guest cannot reach.
func GuestProxy(proxy string, isolated bool) (string, error) {
	if proxy == "" {
		return "", nil
	}
	if isolated {
		return "", errs.Usage("--proxy %s with --isolated: an isolated guest reaches nothing, a proxy included; drop one of them", proxy)
	}
	host, port, err := net.SplitHostPort(proxy)
	if err != nil {
		return "", errs.Usage("--proxy %q: use host:port", proxy)
	}
	if strings.EqualFold(host, "localhost") || host == "127.0.0.1" {
		return net.JoinHostPort(slirpHost, port), nil
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsLoopback() {
		return "", errs.Usage("--proxy %s: the local builder's guest reaches this host's loopback only at 127.0.0.1; listen there", proxy)
	}
	return proxy, nil
}
