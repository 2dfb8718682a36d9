// Package manifest is the image's manifest: what a built image holds (its
// packages with versions, its snaps, the runner, the base image, the
// recipe, the build), like the image data file of GitHub's own images. The
// builder collects it from the guest before clean-up, the guest keeps it at
// GuestPath and the host keeps a byte-identical copy; Diff tells two apart.
package manifest

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// GuestPath is where the image holds its manifest (root, 0644).
const GuestPath = "/etc/runner-image/manifest.json"

// Schema is the version of the manifest's format.
const Schema = 1

// DpkgQueryFormat is dpkg-query's -f format whose output ParseDpkg reads:
// package (with ":arch" for a foreign architecture), version, status.
const DpkgQueryFormat = `${binary:Package}\t${Version}\t${db:Status-Status}\n`

// Manifest is the image's manifest. Its JSON (Marshal) is what the image
// and the host keep.
type Manifest struct {
	Schema         int       `json:"schema"`
	BuildID        string    `json:"build_id"`
	ImageName      string    `json:"image_name"`
	Base           string    `json:"base"`
	Arch           string    `json:"arch"`
	BuiltAt        string    `json:"built_at"` // RFC 3339, UTC
	BuilderVersion string    `json:"builder_version"`
	BaseImage      BaseImage `json:"base_image"`
	RecipeSHA256   string    `json:"recipe_sha256"` // of the user-data the guest booted with
	Runner         Runner    `json:"runner"`
	Packages       []Package `json:"packages"` // installed dpkg packages, by name
	Snaps          []Snap    `json:"snaps"`    // empty when the guest has no snap
}

// BaseImage is what the image was built from.
type BaseImage struct {
	Serial string `json:"serial"` // the mirror's serial, "" when unknown
	SHA256 string `json:"sha256"`
	ID     string `json:"id,omitempty"` // the Glance image booted (openstack builder)
}

// Runner is the GitHub Actions runner release the recipe installed
// (empty when --user-data replaced the recipe and nothing was pinned).
type Runner struct {
	Version string `json:"version"`
	SHA256  string `json:"sha256"`
}

// Package is one installed dpkg package.
type Package struct {
	Name    string `json:"name"` // binary:Package: "libc6", "libc6:i386"
	Version string `json:"version"`
}

// Snap is one installed snap.
type Snap struct {
	Name     string `json:"name"`
	Version  string `json:"version"`
	Revision string `json:"revision"`
}

// Marshal is the manifest's file: indented JSON with a final newline, the
// packages and snaps sorted by name.
func (m Manifest) Marshal() ([]byte, error) {
	m.Packages = sortedPackages(m.Packages)
	m.Snaps = slices.Clone(m.Snaps)
	slices.SortFunc(m.Snaps, func(a, b Snap) int { return cmp.Compare(a.Name, b.Name) })
	if m.Snaps == nil {
		m.Snaps = []Snap{}
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding the manifest: %w", err)
	}
	return append(data, '\n'), nil
}

func sortedPackages(ps []Package) []Package {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b Package) int { return cmp.Compare(a.Name, b.Name) })
	if ps == nil {
		ps = []Package{}
	}
	return ps
}

// SHA256 is the lower-case hex SHA-256 of data (a manifest file).
func SHA256(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// Parse reads a manifest file.
func Parse(data []byte) (Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("not a manifest (JSON): %w", err)
	}
	if m.Schema != Schema {
		return Manifest{}, fmt.Errorf("manifest schema %d, want %d", m.Schema, Schema)
	}
	return m, nil
}

// ParseDpkg reads the output of `dpkg-query -W -f DpkgQueryFormat`: one
// line per package, "name\tversion\tstatus". Packages whose status is not
// "installed" (removed with their config files left, half-installed) are
// not in the image's software and are left out; every other line must be
// well formed. The result is sorted by name; a name given twice is an error.
func ParseDpkg(out []byte) ([]Package, error) {
	var ps []Package
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if line == "" {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 3 {
			return nil, fmt.Errorf("dpkg-query line %d: %d fields, want 3 (package, version, status): %q", n, len(f), clip(line))
		}
		name, version, status := f[0], f[1], f[2]
		if !isToken(name) || !isToken(version) || !isToken(status) {
			return nil, fmt.Errorf("dpkg-query line %d: an empty field or one with spaces or control characters: %q", n, clip(line))
		}
		if status != "installed" {
			continue
		}
		if seen[name] {
			return nil, fmt.Errorf("dpkg-query line %d: package %s listed twice", n, name)
		}
		seen[name] = true
		ps = append(ps, Package{Name: name, Version: version})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("dpkg-query output: %w", err)
	}
	return sortedPackages(ps), nil
}

// RenderDpkg is the dpkg-query output ParseDpkg reads back as ps (each
// package "installed"), sorted by name.
func RenderDpkg(ps []Package) []byte {
	var b bytes.Buffer
	for _, p := range sortedPackages(ps) {
		fmt.Fprintf(&b, "%s\t%s\tinstalled\n", p.Name, p.Version)
	}
	return b.Bytes()
}

// ParseSnapList reads the output of `snap list`: a header line
// ("Name Version Rev Tracking Publisher Notes") and one line per snap,
// columns separated by spaces. Empty output (no snap, or no snap command)
// is no snap. The result is sorted by name.
func ParseSnapList(out []byte) ([]Snap, error) {
	var snaps []Snap
	seen := map[string]bool{}
	header := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if !header {
			if f[0] != "Name" || len(f) < 3 || f[1] != "Version" || f[2] != "Rev" {
				return nil, fmt.Errorf("snap list line %d: want the header \"Name Version Rev ...\", got %q", n, clip(sc.Text()))
			}
			header = true
			continue
		}
		if len(f) < 3 || !isToken(f[0]) || !isToken(f[1]) || !isToken(f[2]) {
			return nil, fmt.Errorf("snap list line %d: want name, version and revision: %q", n, clip(sc.Text()))
		}
		if seen[f[0]] {
			return nil, fmt.Errorf("snap list line %d: snap %s listed twice", n, f[0])
		}
		seen[f[0]] = true
		snaps = append(snaps, Snap{Name: f[0], Version: f[1], Revision: f[2]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("snap list output: %w", err)
	}
	slices.SortFunc(snaps, func(a, b Snap) int { return cmp.Compare(a.Name, b.Name) })
	return snaps, nil
}

// isToken reports whether s is a non-empty UTF-8 string without spaces or
// control characters.
func isToken(s string) bool {
	if s == "" || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == utf8.RuneError {
			return false
		}
	}
	return true
}

// clip shortens a line for an error message.
func clip(s string) string {
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}

// Change is one line of Diff: a package (or snap) added, removed or changed.
type Change struct {
	Op   byte   // '+', '-' or '~'
	Name string // a snap's name is "snap:" and its name
	Old  string // version before ("" when added)
	New  string // version after ("" when removed)
}

func (c Change) String() string {
	switch c.Op {
	case '+':
		return fmt.Sprintf("+ %s %s", c.Name, c.New)
	case '-':
		return fmt.Sprintf("- %s %s", c.Name, c.Old)
	default:
		return fmt.Sprintf("~ %s %s -> %s", c.Name, c.Old, c.New)
	}
}

// Diff lists what changed from older to newer: packages and snaps added,
// removed and changed (a snap's version or revision), sorted by name.
func Diff(older, newer Manifest) []Change {
	versions := func(m Manifest) map[string]string {
		v := make(map[string]string, len(m.Packages)+len(m.Snaps))
		for _, p := range m.Packages {
			v[p.Name] = p.Version
		}
		for _, s := range m.Snaps {
			v["snap:"+s.Name] = s.Version + " (" + s.Revision + ")"
		}
		return v
	}
	a, b := versions(older), versions(newer)
	var out []Change
	for name, ov := range a {
		nv, ok := b[name]
		switch {
		case !ok:
			out = append(out, Change{Op: '-', Name: name, Old: ov})
		case nv != ov:
			out = append(out, Change{Op: '~', Name: name, Old: ov, New: nv})
		}
	}
	for name, nv := range b {
		if _, ok := a[name]; !ok {
			out = append(out, Change{Op: '+', Name: name, New: nv})
		}
	}
	slices.SortFunc(out, func(x, y Change) int { return cmp.Compare(x.Name, y.Name) })
	return out
}
