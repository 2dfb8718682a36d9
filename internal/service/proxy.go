package service

import (
	"fmt"

	"go.yaml.in/yaml/v3"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
)

// proxyConfig is the file's proxy key. Two proxies fit in it:
//
//	proxy: squid.internal:3128            # the guest's proxy (host:port), as before
//	proxy:
//	  guest: squid.internal:3128          # the same, in the mapping form
//	  host:                               # this host's own proxy (every HTTP client,
//	    http: http://squid.internal:3128  # setup's units and cron line, callbacks)
//	    https: http://squid.internal:3128
//	    no_proxy: 10.0.0.0/8,.internal
//
// The values are checked by the build rules (config.ValidateProxy,
// config.ValidateHostProxy), not here.
type proxyConfig struct {
	Guest string
	Host  config.HostProxy
}

func (p *proxyConfig) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		p.Guest = n.Value
		return nil
	case yaml.MappingNode:
	default:
		return &lineError{line: n.Line, msg: "proxy: give the guest's proxy as host:port, or {guest: HOST:PORT, host: {http: URL, https: URL, no_proxy: LIST}}"}
	}
	return eachScalar(n, "proxy", func(key string, v *yaml.Node) error {
		switch key {
		case "guest":
			if v.Kind != yaml.ScalarNode {
				return &lineError{line: v.Line, msg: "proxy.guest: give host:port"}
			}
			p.Guest = v.Value
			return nil
		case "host":
			if v.Kind != yaml.MappingNode {
				return &lineError{line: v.Line, msg: "proxy.host: give {http: URL, https: URL, no_proxy: LIST}"}
			}
			return eachScalar(v, "proxy.host", func(key string, v *yaml.Node) error {
				if v.Kind != yaml.ScalarNode {
					return &lineError{line: v.Line, msg: fmt.Sprintf("proxy.host.%s: give one value", key)}
				}
				switch key {
				case "http":
					p.Host.HTTP = v.Value
				case "https":
					p.Host.HTTPS = v.Value
				case "no_proxy":
					p.Host.NoProxy = v.Value
				default:
					return errUnknownKey
				}
				return nil
			})
		}
		return errUnknownKey
	})
}

var errUnknownKey = fmt.Errorf("unknown key")

// eachScalar calls f with each key of the mapping n and its value; an
// errUnknownKey from f is reported at the key's line.
func eachScalar(n *yaml.Node, path string, f func(key string, v *yaml.Node) error) error {
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if err := f(k.Value, v); err == errUnknownKey {
			return &lineError{line: k.Line, msg: fmt.Sprintf("%s: unknown key %q", path, k.Value)}
		} else if err != nil {
			return err
		}
	}
	return nil
}
