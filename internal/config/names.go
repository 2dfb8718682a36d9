package config

import (
	"fmt"
	"regexp"
	"strings"
)

// The resource names are those of the Python tool (inventory §1.2) so that
// operators and consumers that grep for them keep working. The one deliberate
// difference: the security group is per prefix (SecurityGroupName), because a
// shared group was deleted and recreated under concurrent builders.

// BaseImageName is the Glance name of the uploaded base image.
func BaseImageName(prefix string, b Base, a Arch) string {
	return fmt.Sprintf("%s-image-builder-base-%s-%s", prefix, b, a)
}

// BuilderName is the Nova name of the builder server.
func BuilderName(prefix string, b Base, a Arch) string {
	return fmt.Sprintf("%s-image-builder-%s-%s", prefix, b, a)
}

// KeypairName is the Nova keypair name.
func KeypairName(prefix string) string { return prefix + "-image-builder-ssh-key" }

// LegacySecurityGroupName is the Python tool's shared group (never deleted by us).
const LegacySecurityGroupName = "github-runner-image-builder-v1"

// SecurityGroupName is the security group of one prefix.
func SecurityGroupName(prefix string) string {
	if prefix == "" {
		return LegacySecurityGroupName
	}
	return prefix + "-" + LegacySecurityGroupName
}

// ImageName is the charm's output image name convention: <prefix>-<base>-<arch>.
func ImageName(prefix string, b Base, a Arch) string { return fmt.Sprintf("%s-%s-%s", prefix, b, a) }

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ValidatePrefix checks a resource prefix (a usage *SettingError); empty
// is allowed (the Python tool's default).
func ValidatePrefix(p string) error {
	if p == "" || prefixRE.MatchString(p) {
		return nil
	}
	return settingErr("prefix", fmt.Sprintf("%q", p), "use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
}

// ValidateImageName checks an image name the way Glance does: at most 255
// characters, not empty, no control characters. (Glance accepts any other
// Unicode; we also refuse leading/trailing space, which no consumer expects.)
func ValidateImageName(n string) error {
	switch {
	case n == "":
		return fmt.Errorf("IMAGE_NAME must not be empty")
	case len(n) > 255:
		return fmt.Errorf("IMAGE_NAME is %d bytes long; Glance allows at most 255", len(n))
	case strings.TrimSpace(n) != n:
		return fmt.Errorf("IMAGE_NAME %q has leading or trailing space", n)
	}
	for _, r := range n {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("IMAGE_NAME %q contains a control character", n)
		}
	}
	return nil
}
