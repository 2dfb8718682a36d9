package provision

import (
	"crypto/ed25519"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"golang.org/x/crypto/ssh"
)

// BuildHostKey is the SSH host key a build generates for its guest: an
// ed25519 key, made per build, handed to the guest in its user-data
// (cloud-init's ssh_keys) and pinned with PinnedHostKey, so no console has
// to vouch for the guest. The private key lives in memory and in the
// user-data only; String, GoString and LogValue show its fingerprint, never
// the private key, so a stray log line or %v cannot leak it.
type BuildHostKey struct {
	priv ed25519.PrivateKey
	pub  ssh.PublicKey
}

// NewBuildHostKey generates a host key from rand (crypto/rand.Reader in
// production).
func NewBuildHostKey(rand io.Reader) (BuildHostKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand)
	if err != nil {
		return BuildHostKey{}, fmt.Errorf("generating the guest's SSH host key: %w", err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		return BuildHostKey{}, fmt.Errorf("generating the guest's SSH host key: %w", err)
	}
	return BuildHostKey{priv: priv, pub: sp}, nil
}

// PublicKey is the key the guest must present; nil for the zero value.
func (k BuildHostKey) PublicKey() ssh.PublicKey { return k.pub }

// Fingerprint is the SHA-256 fingerprint ("SHA256:...") of the public key.
func (k BuildHostKey) Fingerprint() string {
	if k.pub == nil {
		return ""
	}
	return ssh.FingerprintSHA256(k.pub)
}

// AuthorizedKey is the public key as one line without a newline,
// "ssh-ed25519 AAAA...".
func (k BuildHostKey) AuthorizedKey() string {
	if k.pub == nil {
		return ""
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k.pub)))
}

// PrivateKeyPEM is the private key in OpenSSH's format, as sshd reads its
// host key files. It is a secret: it goes into the user-data and nowhere
// else.
func (k BuildHostKey) PrivateKeyPEM() ([]byte, error) {
	if k.priv == nil {
		return nil, fmt.Errorf("no SSH host key generated")
	}
	block, err := ssh.MarshalPrivateKey(k.priv, "grib-build-host-key")
	if err != nil {
		return nil, fmt.Errorf("encoding the guest's SSH host key: %w", err)
	}
	return pem.EncodeToMemory(block), nil
}

// String names the key by its fingerprint.
func (k BuildHostKey) String() string { return "ssh-ed25519 host key " + k.Fingerprint() }

// GoString is String: %#v must not print the private key either.
func (k BuildHostKey) GoString() string { return k.String() }

// LogValue logs the fingerprint only.
func (k BuildHostKey) LogValue() slog.Value { return slog.StringValue(k.Fingerprint()) }

// HostKey is the host key the guest presented at the first dial (the one
// every redial must present too).
func (g *Guest) HostKey() ssh.PublicKey { return g.hostKey }
