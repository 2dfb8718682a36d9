// Package config holds the domain vocabulary shared by every command:
// architectures, Ubuntu bases, resource names and the validation of the
// values users type. It touches no cloud and no network.
package config

import (
	"fmt"
	"strings"
)

// Arch is a runner architecture in GitHub's spelling (the Python tool's
// --arch values): x64, arm64, s390x, ppc64le, arm.
type Arch string

// The supported architectures.
const (
	ArchX64     Arch = "x64"
	ArchARM64   Arch = "arm64"
	ArchS390X   Arch = "s390x"
	ArchPPC64LE Arch = "ppc64le"
	ArchARM     Arch = "arm" // 32-bit armhf runner on a 64-bit arm64 image
)

// Arches lists every supported architecture.
func Arches() []Arch { return []Arch{ArchX64, ArchARM64, ArchS390X, ArchPPC64LE, ArchARM} }

var archAliases = map[string]Arch{
	"x64": ArchX64, "amd64": ArchX64, "x86_64": ArchX64,
	"arm64": ArchARM64, "aarch64": ArchARM64,
	"s390x":   ArchS390X,
	"ppc64le": ArchPPC64LE, "ppc64el": ArchPPC64LE,
	"arm": ArchARM, "armhf": ArchARM, "armv7l": ArchARM,
}

// ParseArch accepts the spellings users type (case-insensitive).
func ParseArch(s string) (Arch, error) {
	if a, ok := archAliases[strings.ToLower(strings.TrimSpace(s))]; ok {
		return a, nil
	}
	return "", fmt.Errorf("unknown architecture %q (allowed: x64|amd64|x86_64, arm64|aarch64, s390x, ppc64le|ppc64el, arm|armhf)", s)
}

// OpenStack is the Glance/Nova "architecture" property value (libosinfo vocabulary).
func (a Arch) OpenStack() string {
	switch a {
	case ArchX64:
		return "x86_64"
	case ArchARM64, ArchARM:
		return "aarch64"
	default:
		return string(a)
	}
}

// CloudImage is the architecture in Ubuntu cloud image file names.
func (a Arch) CloudImage() string {
	switch a {
	case ArchX64:
		return "amd64"
	case ArchARM64, ArchARM:
		return "arm64" // armhf images do not boot on aarch64 "virt"; the runner is armhf
	case ArchPPC64LE:
		return "ppc64el"
	default:
		return string(a)
	}
}

// Runner is the architecture in actions/runner tarball names.
func (a Arch) Runner() string { return string(a) }

// Debian is the dpkg architecture of the image's native packages.
func (a Arch) Debian() string { return a.CloudImage() }
