package config

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHJump is the jump host the builder's SSH goes through, as OpenSSH's
// ProxyJump: the builder dials Host, checks its host key against
// KnownHosts, and opens its TCP connection to the guest's sshd from there.
// The zero value is a direct connection.
type SSHJump struct {
	Host       string // user@host[:port] (ParseJumpHost), or "" for none
	Key        string // private key file for Host; "" uses the SSH agent (SSH_AUTH_SOCK)
	KnownHosts string // OpenSSH known_hosts file that must hold Host's key
}

// IsZero reports whether no jump host is configured.
func (j SSHJump) IsZero() bool { return j == SSHJump{} }

// JumpHost is a parsed --ssh-jump value.
type JumpHost struct {
	User string
	Host string // a DNS name, an IPv4 address or an IPv6 address (without brackets)
	Port int
}

// Addr is host:port, as dialled and as known_hosts is looked up by.
func (h JumpHost) Addr() string { return net.JoinHostPort(h.Host, strconv.Itoa(h.Port)) }

// String is user@host:port, which ParseJumpHost parses back to h.
func (h JumpHost) String() string { return h.User + "@" + h.Addr() }

const (
	defaultSSHPort    = 22
	maxKnownHostsSize = 1 << 20
	maxKeyFileSize    = 64 << 10
)

var (
	jumpUserRE  = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$`)
	dnsLabelRE  = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
	digitsDotRE = regexp.MustCompile(`^[0-9.]+$`)
)

// ParseJumpHost parses --ssh-jump strictly: user@host[:port], the host a
// DNS name, an IPv4 address or a bracketed IPv6 address, the port a
// decimal from 1 to 65535 (default 22). It refuses what OpenSSH would read
// otherwise or what this tool does not do: a scheme, several hops, a
// password, spaces. A password is never shown back.
func ParseJumpHost(s string) (JumpHost, error) {
	shown := fmt.Sprintf("%q", s)
	if strings.ContainsFunc(s, isControl) {
		shown = "<unprintable>"
	}
	bad := func(why string) error {
		return settingErr("ssh_jump", shown, "%s; use user@host[:port], e.g. ubuntu@bastion.internal:2222", why)
	}
	user, hostPort, ok := strings.Cut(s, "@")
	if ok && strings.Contains(user, ":") { // user:password@ — the password must not show
		shown = fmt.Sprintf("%q", redactURL(s))
		if strings.ContainsFunc(s, isControl) {
			shown = "<unprintable>"
		}
	}
	switch {
	case s == "":
		return JumpHost{}, bad("empty")
	case strings.ContainsFunc(s, isSpaceOrControl):
		return JumpHost{}, bad("spaces and control characters are not allowed")
	case strings.Contains(s, "://"):
		return JumpHost{}, bad("drop the scheme")
	case strings.Contains(s, ","):
		return JumpHost{}, bad("only one jump host is supported")
	case !ok || user == "":
		return JumpHost{}, bad("the login user is missing")
	case strings.Contains(user, ":"):
		return JumpHost{}, bad("a password is not accepted (use --ssh-jump-key or the SSH agent)")
	case strings.Contains(hostPort, "@"):
		return JumpHost{}, bad("more than one @")
	case !jumpUserRE.MatchString(user):
		return JumpHost{}, bad("the user is not a login name (letters, digits, _ . -, not starting with - or .)")
	}
	host, port := hostPort, ""
	if strings.HasPrefix(hostPort, "[") {
		end := strings.Index(hostPort, "]")
		if end < 0 {
			return JumpHost{}, bad("unclosed [")
		}
		host, port = hostPort[1:end], hostPort[end+1:]
		if port != "" {
			p, ok := strings.CutPrefix(port, ":")
			if !ok {
				return JumpHost{}, bad("text after ]")
			}
			port = p
			if port == "" {
				return JumpHost{}, bad("the port is empty")
			}
		}
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
			return JumpHost{}, bad("brackets hold an IPv6 address (without a zone)")
		}
		host = a.String()
	} else {
		if strings.Count(hostPort, ":") > 1 {
			return JumpHost{}, bad("an IPv6 address goes in brackets")
		}
		if h, p, ok := strings.Cut(hostPort, ":"); ok {
			host, port = h, p
			if port == "" {
				return JumpHost{}, bad("the port is empty")
			}
		}
		if err := checkJumpHostName(host); err != nil {
			return JumpHost{}, bad(err.Error())
		}
	}
	n := defaultSSHPort
	if port != "" {
		v, err := strconv.Atoi(port)
		if err != nil || v < 1 || v > 65535 || strconv.Itoa(v) != port {
			return JumpHost{}, bad("the port is not a number from 1 to 65535")
		}
		n = v
	}
	return JumpHost{User: user, Host: host, Port: n}, nil
}

// checkJumpHostName accepts a DNS name or an IPv4 address in dotted-quad form.
func checkJumpHostName(host string) error {
	if host == "" {
		return errors.New("the host is missing")
	}
	if digitsDotRE.MatchString(host) {
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is4() || a.String() != host {
			return errors.New("the host is not an IPv4 address")
		}
		return nil
	}
	name := strings.TrimSuffix(host, ".")
	if len(name) == 0 || len(name) > 253 {
		return errors.New("the host is not a DNS name")
	}
	for label := range strings.SplitSeq(name, ".") {
		if !dnsLabelRE.MatchString(label) {
			return errors.New("the host is not a DNS name")
		}
	}
	return nil
}

// ValidateSSHJump checks the jump host settings: --ssh-jump parsed
// strictly, --ssh-jump-known-hosts required with it (the jump host's key is
// never trusted blindly) and holding a key for it, --ssh-jump-key (if
// given) a private key file only its owner may read. The two files are
// read here, so a bad one is refused before anything is created.
func ValidateSSHJump(j SSHJump) error {
	if j.Host == "" {
		for _, f := range []struct{ id, v string }{{"ssh_jump_key", j.Key}, {"ssh_jump_known_hosts", j.KnownHosts}} {
			if f.v != "" {
				return settingErr(f.id, "", "applies only with {ssh_jump}")
			}
		}
		return nil
	}
	h, err := ParseJumpHost(j.Host)
	if err != nil {
		return err
	}
	if j.KnownHosts == "" {
		return settingErr("ssh_jump_known_hosts", "", "required with {ssh_jump}: the jump host's key is checked against this known_hosts file, never trusted blindly (make it with ssh-keyscan -p %d %s and check the fingerprint)", h.Port, h.Host)
	}
	if _, _, err := ReadJumpKnownHosts(j.KnownHosts, h); err != nil {
		return err
	}
	if j.Key != "" {
		if _, err := ReadJumpKey(j.Key); err != nil {
			return err
		}
	}
	return nil
}

// ReadJumpKnownHosts reads the known_hosts file at path and returns its
// host key check and the keys it holds for h (at least one, else an error:
// every connection would be refused).
func ReadJumpKnownHosts(path string, h JumpHost) (ssh.HostKeyCallback, []ssh.PublicKey, error) {
	bad := func(format string, args ...any) error {
		return settingErr("ssh_jump_known_hosts", fmt.Sprintf("%q", path), format, args...)
	}
	if strings.TrimSpace(path) == "" || strings.ContainsFunc(path, isControl) {
		return nil, nil, settingErr("ssh_jump_known_hosts", "", "give a file path")
	}
	if _, err := readSmallFile(path, maxKnownHostsSize); err != nil {
		return nil, nil, bad("%s", fileProblem(err))
	}
	check, err := knownhosts.New(path)
	if err != nil {
		return nil, nil, bad("not a known_hosts file: %s", oneLineErr(err, path))
	}
	// Ask with a key no file holds: the answer lists the keys it has for h.
	_, probe, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, bad("%v", err)
	}
	probeKey, err := ssh.NewSignerFromKey(probe)
	if err != nil {
		return nil, nil, bad("%v", err)
	}
	err = check(h.Addr(), &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: h.Port}, probeKey.PublicKey())
	var keyErr *knownhosts.KeyError
	if !errors.As(err, &keyErr) || len(keyErr.Want) == 0 {
		return nil, nil, bad("no key for %s in it: add the jump host's key (ssh-keyscan -p %d %s) and check its fingerprint", knownhosts.Normalize(h.Addr()), h.Port, h.Host)
	}
	keys := make([]ssh.PublicKey, 0, len(keyErr.Want))
	for _, k := range keyErr.Want {
		keys = append(keys, k.Key)
	}
	return check, keys, nil
}

// ReadJumpKey reads the jump host's private key. Like OpenSSH it refuses a
// file that its group or others may read or write (chmod 600 it), and a key
// protected by a passphrase (load it into the SSH agent instead). The key
// itself is never shown.
func ReadJumpKey(path string) (ssh.Signer, error) {
	bad := func(format string, args ...any) error {
		return settingErr("ssh_jump_key", fmt.Sprintf("%q", path), format, args...)
	}
	if strings.TrimSpace(path) == "" || strings.ContainsFunc(path, isControl) {
		return nil, settingErr("ssh_jump_key", "", "give a file path")
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, bad("%s", fileProblem(err))
	}
	if !st.Mode().IsRegular() {
		return nil, bad("not a regular file")
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, bad("has mode %04o: others may read the private key; chmod 600 it", perm)
	}
	data, err := readSmallFile(path, maxKeyFileSize)
	if err != nil {
		return nil, bad("%s", fileProblem(err))
	}
	signer, err := ssh.ParsePrivateKey(data)
	var missing *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &missing):
		return nil, bad("the key has a passphrase: add it to the SSH agent (ssh-add) and leave {ssh_jump_key} out")
	case err != nil:
		return nil, bad("not an OpenSSH or PEM private key")
	}
	return signer, nil
}

// readSmallFile reads at most limit bytes of a regular file.
func readSmallFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("larger than %d KiB", limit>>10)
	}
	return data, nil
}

// fileProblem says why a file could not be used, without repeating its path.
func fileProblem(err error) string {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "no such file"
	case errors.Is(err, os.ErrPermission):
		return "not readable by this user"
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// oneLineErr is err's message on one line, without the "knownhosts: PATH"
// that the message already names.
func oneLineErr(err error, path string) string {
	msg := strings.TrimPrefix(err.Error(), "knownhosts: ")
	if rest, ok := strings.CutPrefix(msg, path+":"); ok {
		msg = "line " + rest
	}
	return strings.Join(strings.Fields(msg), " ")
}
