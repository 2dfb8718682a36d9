// Package faultproxy is test infrastructure: an HTTP proxy on loopback that
// sits in front of a real OpenStack and injects faults into chosen requests,
// and a TCP proxy (NewTCP) that does the same to raw connections.
//
// # Routing
//
// New starts one listener (127.0.0.1:0) in front of Keystone; its AuthURL is
// what a client puts in place of the cloud's auth_url. Every Keystone token
// response that crosses it (POST and GET /v3/auth/tokens) has its service
// catalog rewritten: each endpoint URL is replaced by the URL of a proxy
// listener for that (service type, upstream host:port) pair, created on first
// sight, with the same path. So once a client authenticates through the proxy,
// all its Nova, Glance, Neutron and Placement calls cross the proxy too.
//
// One listener per upstream (rather than a path prefix) keeps request paths
// unchanged, and the proxy forwards the client's Host header, so the links
// services build from it (Nova and Neutron pagination, Keystone version
// documents) point back at the proxy as well.
//
// Only loopback upstreams are proxied: New refuses a non-loopback Keystone, a
// catalog naming a non-loopback endpoint fails the token response with 502,
// and the dialer refuses any non-loopback address.
//
// Bodies are streamed in both directions and flushed as they arrive; only a
// Keystone token response (small JSON) is read whole, to be rewritten.
//
// # Faults
//
// A Rule names a request pattern (method, service type, path regexp) and a
// Fault; When chooses which of the matching requests it fires on (every one,
// only the Nth, the first N). Rules are added and removed while the proxy
// runs. A Handle counts how often its rule fired (Rule.OnFire marks the
// moment); Requests is the log of every request (method, service, path,
// status, rule) in arrival order, for counting API calls. A handler logs
// its request's end just after the last byte went out, so call Idle before
// reading the log.
//
// The faults: answer a status (500, 503, or 401 to make the client
// re-authenticate) with an OpenStack-style JSON body, optionally after reading
// part of the request body; reset the connection (the client sees
// ECONNRESET); stall for a while before forwarding, or until the client gives
// up; cut the request or the response body after K bytes and reset. A cut
// response delivers exactly K bytes (it waits, at most 5 s, until the client
// has acknowledged them) before the reset.
//
// # TCP
//
// NewTCP is the same idea one layer down, for protocols other than HTTP
// (a builder guest's SSH): a listener on 127.0.0.1:0 that forwards every
// connection to one loopback upstream, refusing any other. Its controls act
// while it runs: ResetAll resets every open connection (SO_LINGER 0: the
// client sees ECONNRESET, the upstream a reset too); Stall holds the bytes of
// every connection in both directions, open ones and new ones, until Release
// or until a duration passes; CutAfter lets K more bytes of every open
// connection through in one direction, then resets it. Accepted, Open,
// Resets and Held count connections and held reads, so a test can prove its
// fault fired.
//
// Note for tests: Go's http.Transport silently retries an idempotent request
// (GET, HEAD, ...) once when a reused keep-alive connection is reset before
// any response byte arrives. A rule meant to make a GET fail with a reset
// should use Every, not Nth or FirstN, or the retry will succeed.
package faultproxy
