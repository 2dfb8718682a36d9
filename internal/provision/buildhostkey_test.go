package provision

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// The generated key round-trips through its OpenSSH encodings, and none of
// the ways it can be printed or logged shows the private key.
func TestBuildHostKey(t *testing.T) {
	k, err := NewBuildHostKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := k.PrivateKeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(pemBytes)
	if err != nil {
		t.Fatalf("sshd could not read the private key: %v", err)
	}
	if !bytes.Equal(signer.PublicKey().Marshal(), k.PublicKey().Marshal()) || signer.PublicKey().Type() != ssh.KeyAlgoED25519 {
		t.Errorf("private key's public half %s, want %s", ssh.FingerprintSHA256(signer.PublicKey()), k.Fingerprint())
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k.AuthorizedKey()))
	if err != nil || ssh.FingerprintSHA256(pub) != k.Fingerprint() || strings.Contains(k.AuthorizedKey(), "\n") {
		t.Errorf("AuthorizedKey %q: %v", k.AuthorizedKey(), err)
	}
	if !strings.HasPrefix(k.Fingerprint(), "SHA256:") {
		t.Errorf("fingerprint %q", k.Fingerprint())
	}
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("key", "host_key", k)
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("key", "host_key", k)
	printed := fmt.Sprintf("%v %+v %#v %s", k, k, k, k) + logs.String()
	if !strings.Contains(printed, k.Fingerprint()) {
		t.Errorf("the fingerprint is not shown: %s", printed)
	}
	body := pemBody(pemBytes)
	for _, line := range body {
		if strings.Contains(printed, line) {
			t.Errorf("a line of the private key was printed: %s", printed)
		}
	}
	if len(body) < 3 {
		t.Errorf("PEM body of %d lines", len(body))
	}
	other, err := NewBuildHostKey(rand.Reader)
	if err != nil || other.Fingerprint() == k.Fingerprint() {
		t.Errorf("two builds got the same key: %v", err)
	}
	if _, err := (BuildHostKey{}).PrivateKeyPEM(); err == nil {
		t.Error("the zero key has a private key")
	}
}

// pemBody is the base64 lines of a PEM block.
func pemBody(p []byte) []string {
	var out []string
	for line := range strings.Lines(string(p)) {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "-----") {
			out = append(out, line)
		}
	}
	return out
}
