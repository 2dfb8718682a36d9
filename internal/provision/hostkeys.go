package provision

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"
)

// The markers cloud-init's write-ssh-key-fingerprints helper prints around
// the host keys on the console (through `logger --stderr`, so each line may
// carry a syslog prefix such as "<14>Nov 23 07:49:04 ec2: ").
const (
	fingerprintsBegin = "-----BEGIN SSH HOST KEY FINGERPRINTS-----"
	fingerprintsEnd   = "-----END SSH HOST KEY FINGERPRINTS-----"
	keysBegin         = "-----BEGIN SSH HOST KEY KEYS-----"
	keysEnd           = "-----END SSH HOST KEY KEYS-----"
)

// ErrNoHostKeys means the console holds no complete block of host key
// fingerprints (yet). Dial keeps polling the console while it sees it.
var ErrNoHostKeys = errors.New("no SSH host key fingerprints on the console")

// ErrHostKeyMismatch means the guest presented a host key whose fingerprint
// cloud-init did not print: something may be intercepting the connection.
// Dial never retries it.
var ErrHostKeyMismatch = errors.New("SSH host key mismatch")

// fingerprintLine matches one line of `ssh-keygen -l` output, e.g.
// "256 SHA256:L3X3Rh9S4MP6DNBi8pdHQw9vwejftucB0xrr4I2v19Y root@host (ED25519)";
// SHA-256 fingerprints are 43 unpadded base64 characters.
var fingerprintLine = regexp.MustCompile(`(?:^|\s)(\d{1,5}) (SHA256:[A-Za-z0-9+/]{43})(?:\s|$)(?:.*\(([A-Z0-9-]+)\)\s*$)?`)

// hostKey is one host key the console vouches for: its SHA-256 fingerprint
// and the SSH host key algorithms it can be presented with (nil: unknown).
type hostKey struct {
	fingerprint string
	algos       []string
}

// HostKeysFromConsole returns the SHA-256 fingerprints ("SHA256:...") of the
// guest's SSH host keys that cloud-init printed on the console: the last
// complete "BEGIN SSH HOST KEY FINGERPRINTS" block, plus the keys of the last
// complete "BEGIN SSH HOST KEY KEYS" block when there is one. It returns an
// error wrapping ErrNoHostKeys when there is no complete block or the block
// holds no SHA-256 fingerprint (older MD5 fingerprints are not trusted).
func HostKeysFromConsole(console string) ([]string, error) {
	keys, err := parseConsoleHostKeys(console)
	if err != nil {
		return nil, err
	}
	fps := make([]string, len(keys))
	for i, k := range keys {
		fps[i] = k.fingerprint
	}
	return fps, nil
}

func parseConsoleHostKeys(console string) ([]hostKey, error) {
	if strings.TrimSpace(console) == "" {
		return nil, fmt.Errorf("%w: the console output is empty", ErrNoHostKeys)
	}
	fpBlock, fpOK := lastBlock(console, fingerprintsBegin, fingerprintsEnd)
	keyBlock, keysOK := lastBlock(console, keysBegin, keysEnd)
	if !fpOK && !keysOK {
		return nil, fmt.Errorf("%w: no complete %q block in %d bytes of console output",
			ErrNoHostKeys, fingerprintsBegin, len(console))
	}
	var keys []hostKey
	add := func(k hostKey) {
		i := slices.IndexFunc(keys, func(o hostKey) bool { return o.fingerprint == k.fingerprint })
		switch {
		case i < 0:
			keys = append(keys, k)
		case keys[i].algos != nil && k.algos != nil:
			for _, a := range k.algos {
				if !slices.Contains(keys[i].algos, a) {
					keys[i].algos = append(keys[i].algos, a)
				}
			}
		default:
			keys[i].algos = nil // one of them does not know: do not restrict
		}
	}
	for _, line := range fpBlock {
		if k, ok := parseFingerprintLine(line); ok {
			add(k)
		}
	}
	for _, line := range keyBlock {
		if k, ok := parsePublicKeyLine(line); ok {
			add(k)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: the console's host key block holds no SHA256 fingerprint", ErrNoHostKeys)
	}
	return keys, nil
}

// lastBlock returns the lines strictly between the last begin marker that is
// followed by an end marker and that end marker.
func lastBlock(console, begin, end string) ([]string, bool) {
	var cur, last []string
	in, found := false, false
	for line := range strings.Lines(console) {
		line = strings.TrimRight(line, "\r\n")
		switch {
		case strings.Contains(line, begin):
			in, cur = true, nil
		case in && strings.Contains(line, end):
			in, found, last = false, true, cur
		case in:
			cur = append(cur, line)
		}
	}
	return last, found
}

func parseFingerprintLine(line string) (hostKey, bool) {
	m := fingerprintLine.FindStringSubmatch(line)
	if m == nil {
		return hostKey{}, false
	}
	k := hostKey{fingerprint: m[2]}
	switch m[3] {
	case "ED25519":
		k.algos = []string{ssh.KeyAlgoED25519}
	case "ECDSA":
		switch m[1] {
		case "256":
			k.algos = []string{ssh.KeyAlgoECDSA256}
		case "384":
			k.algos = []string{ssh.KeyAlgoECDSA384}
		case "521":
			k.algos = []string{ssh.KeyAlgoECDSA521}
		}
	case "RSA":
		k.algos = []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}
	}
	return k, true
}

// parsePublicKeyLine reads an authorized_keys style line ("ssh-ed25519 AAAA...
// comment"), possibly after a syslog prefix.
func parsePublicKeyLine(line string) (hostKey, bool) {
	fields := strings.Fields(line)
	for i, f := range fields {
		if !strings.HasPrefix(f, "ssh-") && !strings.HasPrefix(f, "ecdsa-") {
			continue
		}
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(strings.Join(fields[i:], " ")))
		if err != nil {
			continue
		}
		algos := keyAlgos(pub.Type())
		if algos == nil {
			continue // DSA, security keys and the like are not host keys we accept
		}
		return hostKey{fingerprint: ssh.FingerprintSHA256(pub), algos: algos}, true
	}
	return hostKey{}, false
}

// ConsoleReader returns the guest's console output so far (Nova's console
// log, or the file qemu writes the serial port to).
type ConsoleReader func(ctx context.Context) (string, error)

// HostKeyPolicy says which SSH host keys Dial accepts. Build one with
// PinnedHostKey, ConsoleHostKeys, KnownHostKeys or InsecureAcceptAnyHostKey;
// the zero value accepts nothing.
type HostKeyPolicy struct {
	console  ConsoleReader
	known    []string
	pin      ssh.PublicKey
	insecure bool
}

// PinnedHostKey accepts exactly key: the host key the build generated and
// handed to the guest in its user-data (BuildHostKey). Dial offers only its
// algorithm, so the guest cannot present another of its keys instead.
func PinnedHostKey(key ssh.PublicKey) HostKeyPolicy { return HostKeyPolicy{pin: key} }

// ConsoleHostKeys accepts the host keys whose fingerprints cloud-init printed
// on the console. Dial polls read until the fingerprint block appears, within
// its deadline; no block by then fails closed.
func ConsoleHostKeys(read ConsoleReader) HostKeyPolicy { return HostKeyPolicy{console: read} }

// KnownHostKeys accepts the host keys with these SHA-256 fingerprints
// ("SHA256:..."), e.g. read from the console by the caller.
func KnownHostKeys(fingerprints ...string) HostKeyPolicy {
	return HostKeyPolicy{known: slices.Clone(fingerprints)}
}

// InsecureAcceptAnyHostKey accepts whatever host key the guest presents. It is
// open to a man-in-the-middle on the path to the guest; use it only when the
// console cannot be read and the network path is trusted.
func InsecureAcceptAnyHostKey() HostKeyPolicy { return HostKeyPolicy{insecure: true} }

// String names the policy for logs.
func (p HostKeyPolicy) String() string {
	switch {
	case p.insecure:
		return "insecure-accept-any"
	case p.pin != nil:
		return "pinned-build-key"
	case p.console != nil:
		return "console-fingerprints"
	case len(p.known) > 0:
		return "known-fingerprints"
	default:
		return "none"
	}
}

// acceptedKeys is a resolved policy: the host keys one connection accepts.
type acceptedKeys struct {
	any    bool
	keys   []hostKey
	algos  []string // HostKeyAlgorithms to offer; nil: the library's default
	pinned bool     // keys is the one key of the first dial (a redial)
	// generated: keys is the one key the build generated and put in the
	// guest's user-data (PinnedHostKey)
	generated bool
}

// resolve reads the console once (for the console policy) and returns the
// accepted keys, or an error wrapping ErrNoHostKeys while there are none yet.
func (p HostKeyPolicy) resolve(ctx context.Context) (*acceptedKeys, error) {
	switch {
	case p.insecure:
		return &acceptedKeys{any: true}, nil
	case p.pin != nil:
		a := pinnedKeys(p.pin)
		a.pinned, a.generated = false, true
		return a, nil
	case p.console != nil:
		console, err := p.console(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading the console for SSH host key fingerprints: %w", err)
		}
		keys, err := parseConsoleHostKeys(console)
		if err != nil {
			return nil, err
		}
		return newAcceptedKeys(keys), nil
	case len(p.known) > 0:
		keys := make([]hostKey, len(p.known))
		for i, fp := range p.known {
			keys[i] = hostKey{fingerprint: fp}
		}
		return newAcceptedKeys(keys), nil
	default:
		return nil, errors.New("no SSH host key policy: choose console fingerprints, known fingerprints or the insecure policy")
	}
}

func newAcceptedKeys(keys []hostKey) *acceptedKeys {
	a := &acceptedKeys{keys: keys}
	// Offer only algorithms of keys we can check, so a guest with an unlisted
	// key type is not asked for it; the strongest first.
	preference := []string{ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA521, ssh.KeyAlgoECDSA384,
		ssh.KeyAlgoECDSA256, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}
	for _, algo := range preference {
		for _, k := range keys {
			if k.algos == nil {
				a.algos = nil
				return a
			}
			if slices.Contains(k.algos, algo) && !slices.Contains(a.algos, algo) {
				a.algos = append(a.algos, algo)
			}
		}
	}
	return a
}

func (a *acceptedKeys) fingerprints() []string {
	fps := make([]string, len(a.keys))
	for i, k := range a.keys {
		fps[i] = k.fingerprint
	}
	return fps
}

// check returns nil when key is accepted and an error wrapping
// ErrHostKeyMismatch otherwise.
func (a *acceptedKeys) check(addr string, key ssh.PublicKey) error {
	if a.any {
		return nil
	}
	got := ssh.FingerprintSHA256(key)
	for _, k := range a.keys {
		if k.fingerprint == got {
			return nil
		}
	}
	if a.pinned {
		return fmt.Errorf("%w: %s presented %s key %s on reconnecting, not the key %s it presented when the build first connected; "+
			"refusing to reconnect: something may be intercepting the connection",
			ErrHostKeyMismatch, addr, key.Type(), got, strings.Join(a.fingerprints(), ", "))
	}
	if a.generated {
		return fmt.Errorf("%w: %s presented %s key %s, not the host key %s this build generated and handed to the guest in its user-data; "+
			"refusing to connect: something may be intercepting the connection, or the guest's cloud-init did not take the "+
			"key from the user-data (ssh_keys)",
			ErrHostKeyMismatch, addr, key.Type(), got, strings.Join(a.fingerprints(), ", "))
	}
	return fmt.Errorf("%w: %s presented %s key %s, which is not among the fingerprints cloud-init printed on the console (%s); "+
		"refusing to connect: something may be intercepting the connection",
		ErrHostKeyMismatch, addr, key.Type(), got, strings.Join(a.fingerprints(), ", "))
}
