package baseimage

import (
	"encoding/hex"
	"strings"
	"testing"
)

// The embedded key must be exactly Ubuntu's cloud image signing key: one
// entity, with the published fingerprint and no private part.
func TestUbuntuKeyringFingerprint(t *testing.T) {
	kr, err := UbuntuKeyring()
	if err != nil {
		t.Fatal(err)
	}
	if len(kr) != 1 {
		t.Fatalf("embedded keyring has %d keys, want 1", len(kr))
	}
	e := kr[0]
	if got := strings.ToUpper(hex.EncodeToString(e.PrimaryKey.Fingerprint)); got != UbuntuSigningFingerprint {
		t.Fatalf("fingerprint %s, want %s", got, UbuntuSigningFingerprint)
	}
	if e.PrivateKey != nil {
		t.Fatal("embedded key holds private key material")
	}
	if _, ok := e.Identities["UEC Image Automatic Signing Key <cdimage@ubuntu.com>"]; !ok {
		t.Fatalf("identities %v lack the UEC Image Automatic Signing Key", e.Identities)
	}
	if !e.PrimaryKey.CanSign() {
		t.Fatal("embedded key cannot sign")
	}
}
