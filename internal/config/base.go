package config

import (
	"fmt"
	"strings"
)

// Base is an Ubuntu LTS release by codename.
type Base string

// The supported bases.
const (
	BaseFocal    Base = "focal"
	BaseJammy    Base = "jammy"
	BaseNoble    Base = "noble"
	BaseResolute Base = "resolute"
)

// Bases lists every supported base, oldest first.
func Bases() []Base { return []Base{BaseFocal, BaseJammy, BaseNoble, BaseResolute} }

var baseVersions = map[Base]string{
	BaseFocal: "20.04", BaseJammy: "22.04", BaseNoble: "24.04", BaseResolute: "26.04",
}

// ParseBase accepts a codename or an LTS version number.
func ParseBase(s string) (Base, error) {
	v := strings.ToLower(strings.TrimSpace(s))
	for b, ver := range baseVersions {
		if v == string(b) || v == ver {
			return b, nil
		}
	}
	return "", fmt.Errorf("unknown base image %q (allowed: focal|20.04, jammy|22.04, noble|24.04, resolute|26.04)", s)
}

// Version is the release number, e.g. "24.04" (the os_version image property).
func (b Base) Version() string { return baseVersions[b] }

// SupportsArch reports whether a runner of arch a can be built on base b:
// the armhf runner needs noble or later (multiarch armhf packages).
func (b Base) SupportsArch(a Arch) bool {
	if a == ArchARM {
		return b == BaseNoble || b == BaseResolute
	}
	return true
}

// CheckPair refuses base b (a usage *SettingError) when a runner of arch a
// cannot be built on it.
func CheckPair(a Arch, b Base) error {
	if !b.SupportsArch(a) {
		return settingErr("base", string(b), "arch %s needs noble or resolute", a)
	}
	return nil
}
