package baseimage

import (
	"bytes"
	_ "embed"
	"fmt"

	"github.com/ProtonMail/go-crypto/openpgp"
)

// UbuntuSigningFingerprint is the fingerprint of Ubuntu's cloud image signing
// key, "UEC Image Automatic Signing Key <cdimage@ubuntu.com>", which signs
// every SHA256SUMS on cloud-images.ubuntu.com (the SHA256SUMS.gpg beside it).
const UbuntuSigningFingerprint = "D2EB44626FDDC30B513D5BB71A5D6C4C7DB87C81"

// ubuntuKeyArmored is that key's public part alone (no third-party
// certifications), exported with `gpg --export-options export-minimal
// --export --armor`; the package doc says how to refresh it and
// TestUbuntuKeyringFingerprint pins it.
//
//go:embed ubuntu-cloudimage-key.asc
var ubuntuKeyArmored []byte

// UbuntuKeyring returns the embedded Ubuntu cloud image signing key as a
// keyring for Fetcher.Keyring.
func UbuntuKeyring() (openpgp.EntityList, error) {
	kr, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(ubuntuKeyArmored))
	if err != nil {
		return nil, fmt.Errorf("reading the embedded Ubuntu cloud image key: %w", err)
	}
	return kr, nil
}
