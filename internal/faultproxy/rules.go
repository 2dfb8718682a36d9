package faultproxy

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Service types as they appear in a Keystone catalog; Rule.Service and
// Request.Service use them.
const (
	Identity  = "identity"
	Compute   = "compute"
	Image     = "image"
	Network   = "network"
	Placement = "placement"
)

// Rule says which requests get which fault.
type Rule struct {
	// Name labels the rule in logs and in Request.Rule; "" gives "rule-<n>".
	Name string
	// Method matches the HTTP method exactly ("" matches any).
	Method string
	// Service matches the catalog service type ("" matches any), e.g. Compute.
	Service string
	// Path is a regexp matched against the request path, e.g.
	// `^/v2\.1/servers/[^/]+/action$` ("" matches any).
	Path string
	// Body is a regexp matched against the first MaxRuleBody bytes of the
	// request body ("" matches any), e.g. `^\s*\{\s*"os-stop"` for Nova's
	// stop action: one server action told from another by what it asks,
	// not by its place in the sequence. The body is still forwarded whole.
	Body string
	// When selects which matching requests the rule fires on (zero: every one).
	When When
	// Fault is what happens when the rule fires (zero: the request passes).
	Fault Fault
	// OnFire, if set, is called (synchronously, before the fault is applied)
	// each time the rule fires: a test can cancel a context or send a signal
	// at the exact moment a given call is made. It must not block for long.
	OnFire func()
}

// When selects which of a rule's matching requests it fires on.
// The zero value is Every.
type When struct {
	kind whenKind
	n    int
}

type whenKind int

const (
	whenEvery whenKind = iota
	whenNth
	whenFirstN
)

// Every fires on every matching request.
func Every() When { return When{kind: whenEvery} }

// Nth fires only on the nth matching request (1-based).
func Nth(n int) When { return When{kind: whenNth, n: n} }

// FirstN fires on the first n matching requests.
func FirstN(n int) When { return When{kind: whenFirstN, n: n} }

func (w When) validate() error {
	if w.kind != whenEvery && w.n < 1 {
		return fmt.Errorf("faultproxy: Nth/FirstN need n >= 1, got %d", w.n)
	}
	return nil
}

// selects reports whether the match-th matching request (1-based) fires.
func (w When) selects(match int) bool {
	switch w.kind {
	case whenNth:
		return match == w.n
	case whenFirstN:
		return match <= w.n
	default:
		return true
	}
}

// Fault is what the proxy does to a request a rule fired on.
// The zero value is Pass. Build one with the functions below.
type Fault struct {
	kind   faultKind
	status int           // faultStatus
	after  int64         // faultStatus: request bytes read first; cuts: bytes let through
	stall  time.Duration // faultStall
}

type faultKind int

const (
	faultPass faultKind = iota
	faultStatus
	faultReset
	faultStall
	faultCutRequest
	faultCutResponse
	faultStallResponse
)

// Pass forwards the request unchanged (with Rule.OnFire, an observation point).
func Pass() Fault { return Fault{kind: faultPass} }

// Status answers code (400 to 599) with an OpenStack-style JSON error body,
// without forwarding the request.
func Status(code int) Fault { return Fault{kind: faultStatus, status: code} }

// Unauthorized answers 401, as Keystone middleware does for an expired token:
// a client with re-authentication enabled gets a new token and retries.
func Unauthorized() Fault { return Status(http.StatusUnauthorized) }

// StatusAfter reads (and drops) up to requestBytes of the request body, then
// answers code without forwarding: a fault in the middle of an upload.
func StatusAfter(code int, requestBytes int64) Fault {
	return Fault{kind: faultStatus, status: code, after: requestBytes}
}

// Reset closes the client's connection with a TCP reset, answering nothing.
func Reset() Fault { return Fault{kind: faultReset} }

// Stall holds the request for d, then forwards it. With d <= 0 it holds the
// request until the client gives up (its context ends) or the proxy closes,
// and never forwards it; on Close the client's connection is reset.
func Stall(d time.Duration) Fault { return Fault{kind: faultStall, stall: d} }

// CutRequest forwards the request but lets only the first n bytes of its
// body through, then aborts the upstream request and resets the client.
func CutRequest(n int64) Fault { return Fault{kind: faultCutRequest, after: n} }

// CutResponse forwards the request and the response status and headers, lets
// only the first n bytes of the response body through, then resets the
// client. A response shorter than n bytes arrives whole.
func CutResponse(n int64) Fault { return Fault{kind: faultCutResponse, after: n} }

// StallResponse forwards the request and the response status and headers,
// lets the first n bytes of the response body through, then sends nothing
// more until the client gives up (or the proxy closes) and resets it: a
// transfer that stops in the middle.
func StallResponse(n int64) Fault { return Fault{kind: faultStallResponse, after: n} }

func (f Fault) validate() error {
	switch f.kind {
	case faultStatus:
		if f.status < 400 || f.status > 599 {
			return fmt.Errorf("faultproxy: Status needs a code from 400 to 599, got %d", f.status)
		}
	case faultCutRequest, faultCutResponse, faultStallResponse:
		if f.after < 0 {
			return fmt.Errorf("faultproxy: a cut or stalled response needs n >= 0 bytes, got %d", f.after)
		}
	}
	if f.after < 0 {
		return fmt.Errorf("faultproxy: StatusAfter needs requestBytes >= 0, got %d", f.after)
	}
	return nil
}

// String describes the fault for logs.
func (f Fault) String() string {
	switch f.kind {
	case faultStatus:
		if f.after > 0 {
			return fmt.Sprintf("status %d after %d request bytes", f.status, f.after)
		}
		return fmt.Sprintf("status %d", f.status)
	case faultReset:
		return "reset"
	case faultStall:
		if f.stall <= 0 {
			return "stall until the request ends"
		}
		return "stall " + f.stall.String()
	case faultCutRequest:
		return fmt.Sprintf("cut request after %d bytes", f.after)
	case faultCutResponse:
		return fmt.Sprintf("cut response after %d bytes", f.after)
	case faultStallResponse:
		return fmt.Sprintf("stall response after %d bytes", f.after)
	default:
		return "pass"
	}
}

// Handle is an added rule: it counts the rule's firings and removes it.
type Handle struct {
	set  *ruleSet
	rule Rule
	path *regexp.Regexp // nil: any path
	body *regexp.Regexp // nil: any body

	// guarded by set.mu
	matched int
	fired   int
}

// Name is the rule's name.
func (h *Handle) Name() string { return h.rule.Name }

// Fired reports how many times the rule has fired so far.
func (h *Handle) Fired() int {
	h.set.mu.Lock()
	defer h.set.mu.Unlock()
	return h.fired
}

// Matched reports how many requests matched the rule's pattern so far
// (fired or not).
func (h *Handle) Matched() int {
	h.set.mu.Lock()
	defer h.set.mu.Unlock()
	return h.matched
}

// Remove stops the rule from matching; its counters keep their values.
func (h *Handle) Remove() {
	h.set.mu.Lock()
	defer h.set.mu.Unlock()
	for i, r := range h.set.rules {
		if r == h {
			h.set.rules = append(h.set.rules[:i], h.set.rules[i+1:]...)
			return
		}
	}
}

// ruleSet is the proxy's ordered, concurrency-safe list of rules.
type ruleSet struct {
	mu    sync.Mutex
	rules []*Handle
	added int // for default names
}

func (s *ruleSet) add(r Rule) (*Handle, error) {
	if err := r.When.validate(); err != nil {
		return nil, err
	}
	if err := r.Fault.validate(); err != nil {
		return nil, err
	}
	h := &Handle{rule: r, set: s}
	h.rule.Method = strings.ToUpper(r.Method)
	if r.Path != "" {
		re, err := regexp.Compile(r.Path)
		if err != nil {
			return nil, fmt.Errorf("faultproxy: rule path %q: %w", r.Path, err)
		}
		h.path = re
	}
	if r.Body != "" {
		re, err := regexp.Compile(r.Body)
		if err != nil {
			return nil, fmt.Errorf("faultproxy: rule body %q: %w", r.Body, err)
		}
		h.body = re
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.added++
	if h.rule.Name == "" {
		h.rule.Name = fmt.Sprintf("rule-%d", s.added)
	}
	s.rules = append(s.rules, h)
	return h, nil
}

func (s *ruleSet) clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rules = nil
}

// MaxRuleBody is how much of a request body a Rule.Body pattern sees.
const MaxRuleBody = 64 << 10

// wantsBody reports whether a rule with a Body pattern matches the request's
// method, service and path: only then is its body read before matching.
func (s *ruleSet) wantsBody(method, service, path string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.rules {
		if h.body != nil && h.matchesHead(method, service, path) {
			return true
		}
	}
	return false
}

// match counts the request against every rule whose pattern it matches and
// returns the earliest-added rule that fires on it (nil if none). body is
// the start of the request body (nil when no rule asked for it).
func (s *ruleSet) match(method, service, path string, body []byte) *Handle {
	s.mu.Lock()
	defer s.mu.Unlock()
	var chosen *Handle
	for _, h := range s.rules {
		if !h.matchesHead(method, service, path) || (h.body != nil && !h.body.Match(body)) {
			continue
		}
		h.matched++
		if chosen == nil && h.rule.When.selects(h.matched) {
			chosen = h
			h.fired++
		}
	}
	return chosen
}

func (h *Handle) matchesHead(method, service, path string) bool {
	return (h.rule.Method == "" || h.rule.Method == method) &&
		(h.rule.Service == "" || h.rule.Service == service) &&
		(h.path == nil || h.path.MatchString(path))
}
