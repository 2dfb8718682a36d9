package service

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
)

// Per-image settings: the optional `images:` list of the configuration.
// Each entry names cells of the matrix by base and arch (either omitted:
// every one of the matrix) and sets some of the settings below for them;
// what an entry does not set comes from the top level. A cell is named by
// at most one entry, so no precedence rule is needed. Each cell's final
// RunSpec is checked by RunSpec.Validate (the one rule set), and a refused
// setting the entry gave is reported at the entry's key:
// "FILE:LINE: images.N.KEY: ...".

// ImageSettings is one `images:` entry, parsed.
type ImageSettings struct {
	Base config.Base // "" = every base of the matrix
	Arch config.Arch // "" = every arch of the matrix

	Flavor, Network *string // nil = the top level's
	// Script replaces the top level's script whole (URL and secrets): a
	// script never receives another script's secrets. nil = the top level's.
	Script       *ImageScript
	UploadClouds []string // nil = the top level's; [] = only the build cloud
	// UploadDiskFormats are the per-cloud formats of UploadClouds; with
	// UploadClouds set they replace the top level's.
	UploadDiskFormats map[string]config.DiskFormat
	KeepRevisions     *int
	// DiskFormat is the copies' format where UploadDiskFormats names none;
	// nil = the top level's.
	DiskFormat *config.DiskFormat
	// The boot-test and volume settings go here (and in fileImage,
	// imageKeys, apply, imageSets) when they exist.
}

// ImageScript is an entry's script: its URL and the secrets it gets.
type ImageScript struct {
	URL     string
	Secrets map[string]SecretRef
}

// fileImage is an `images:` entry's shape in the file.
type fileImage struct {
	Base          string            `yaml:"base"`
	Arch          string            `yaml:"arch"`
	Flavor        *string           `yaml:"flavor"`
	Network       *string           `yaml:"network"`
	UploadClouds  *fileUploadClouds `yaml:"upload_clouds"`
	KeepRevisions *int              `yaml:"keep_revisions"`
	DiskFormat    *string           `yaml:"disk_format"`
	Script        *struct {
		URL     string               `yaml:"url"`
		Secrets map[string]SecretRef `yaml:"secrets"`
	} `yaml:"script"`
}

// imageKeys are the keys an entry may have.
var imageKeys = []string{"base", "arch", "flavor", "network", "upload_clouds", "keep_revisions", "disk_format", "script"}

// fileImages decodes the `images:` list, refusing an unknown key with the
// entry's name ("images.N.KEY"), which the file's strict decoding cannot.
type fileImages []fileImage

func (l *fileImages) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.SequenceNode {
		return &lineError{line: n.Line, msg: "images: a list of entries such as {base: noble, arch: x64, flavor: m1.large}"}
	}
	out := make(fileImages, 0, len(n.Content))
	for i, item := range n.Content {
		name := "images." + strconv.Itoa(i)
		if item.Kind != yaml.MappingNode {
			return &lineError{line: item.Line, msg: name + ": an entry is a mapping: base:, arch: and the settings it gives"}
		}
		for j := 0; j+1 < len(item.Content); j += 2 {
			if k := item.Content[j]; !slices.Contains(imageKeys, k.Value) {
				return &lineError{line: k.Line, msg: fmt.Sprintf("%s: unknown key %s (an entry sets %s)", name, k.Value, strings.Join(imageKeys, ", "))}
			}
		}
		var fi fileImage
		if err := item.Decode(&fi); err != nil {
			if le, ok := err.(*lineError); ok {
				return &lineError{line: le.line, msg: name + ": " + le.msg}
			}
			msg := err.Error()
			if te, ok := err.(*yaml.TypeError); ok && len(te.Errors) > 0 {
				msg = te.Errors[0]
			}
			line := item.Line
			if m := lineRE.FindStringSubmatch(msg); m != nil {
				line, _ = strconv.Atoi(m[1])
				msg = m[2]
			}
			return &lineError{line: line, msg: name + ": " + typeNameRE.ReplaceAllString(oneLine(msg), "")}
		}
		out = append(out, fi)
	}
	*l = out
	return nil
}

// images checks the `images:` entries against the matrix and keeps them
// in c.Images; their settings are checked with each cell's RunSpec.
func (v *validator) images(list fileImages, c *Config) {
	for i, fi := range list {
		name := "images." + strconv.Itoa(i)
		im := ImageSettings{Flavor: fi.Flavor, Network: fi.Network, KeepRevisions: fi.KeepRevisions}
		if fi.Base != "" {
			b, err := config.ParseBase(fi.Base)
			switch {
			case err != nil:
				v.failErr(name+".base", err)
			case !slices.Contains(c.Bases, b):
				v.fail(name+".base", "%s is not in matrix.bases: an entry sets images of the matrix", b)
			}
			im.Base = b
		}
		if fi.Arch != "" {
			a, err := config.ParseArch(fi.Arch)
			switch {
			case err != nil:
				v.failErr(name+".arch", err)
			case !slices.Contains(c.Arches, a):
				v.fail(name+".arch", "%s is not in matrix.arches: an entry sets images of the matrix", a)
			}
			im.Arch = a
		}
		if fi.UploadClouds != nil {
			im.UploadClouds = append([]string{}, fi.UploadClouds.names()...)
			im.UploadDiskFormats = v.diskFormats(name+".", *fi.UploadClouds)
		}
		if fi.DiskFormat != nil {
			f, err := config.ParseDiskFormat("disk_format", 0, *fi.DiskFormat)
			if err != nil {
				v.failSettingAt(name+".", err)
			}
			im.DiskFormat = &f
		}
		if fi.Script != nil {
			im.Script = &ImageScript{URL: fi.Script.URL, Secrets: fi.Script.Secrets}
			for s := range fi.Script.Secrets {
				if !envNameRE.MatchString(s) {
					v.fail(name+".script.secrets."+s, "the secret's name must be a shell variable name (letters, digits, _)")
				}
			}
		}
		for _, cell := range c.Cells() {
			if j := c.imageIndex(cell); j >= 0 && im.names(cell) {
				v.fail(name, "names %s as images.%d does: give each image's settings in one entry", cell.ImageName, j)
			}
		}
		c.Images = append(c.Images, im)
	}
}

// names reports whether the entry sets cell's settings.
func (im *ImageSettings) names(cell Cell) bool {
	return (im.Base == "" || im.Base == cell.Base) && (im.Arch == "" || im.Arch == cell.Arch)
}

// imageIndex is the index of the `images:` entry naming cell, or -1.
func (c *Config) imageIndex(cell Cell) int {
	return slices.IndexFunc(c.Images, func(im ImageSettings) bool { return im.names(cell) })
}

// apply puts the entry's settings over spec (the top level's).
func (im *ImageSettings) apply(spec *config.RunSpec) {
	if im.Flavor != nil {
		spec.Flavor = *im.Flavor
	}
	if im.Network != nil {
		spec.Network = *im.Network
	}
	if im.Script != nil {
		spec.ScriptURL = im.Script.URL
	}
	if im.UploadClouds != nil {
		spec.UploadClouds = slices.Clone(im.UploadClouds)
		spec.UploadDiskFormats = maps.Clone(im.UploadDiskFormats)
	}
	if im.KeepRevisions != nil {
		spec.KeepRevisions = *im.KeepRevisions
	}
	if im.DiskFormat != nil {
		spec.DiskFormat = *im.DiskFormat
	}
}

// imageSets reports whether the entry sets the setting id (a Settings ID),
// so that a refused value is reported at the entry's key.
func (im *ImageSettings) imageSets(id string) bool {
	switch id {
	case "flavor":
		return im.Flavor != nil
	case "network":
		return im.Network != nil
	case "script_url":
		return im.Script != nil
	case "upload_clouds", "upload_disk_formats":
		return im.UploadClouds != nil
	case "keep_revisions":
		return im.KeepRevisions != nil
	case "disk_format":
		return im.DiskFormat != nil
	}
	return false
}

// scriptSecrets are the secrets cell's script gets: its entry's, or the
// top level's.
func (c *Config) scriptSecrets(cell Cell) map[string]SecretRef {
	if i := c.imageIndex(cell); i >= 0 && c.Images[i].Script != nil {
		return c.Images[i].Script.Secrets
	}
	return c.ScriptSecrets
}

// secretRefs are every secret the configuration names: the runner token,
// the top level's script secrets and every entry's.
func (c *Config) secretRefs() []SecretRef {
	var refs []SecretRef
	if c.RunnerToken != nil {
		refs = append(refs, *c.RunnerToken)
	}
	for _, m := range append([]map[string]SecretRef{c.ScriptSecrets}, c.imageSecrets()...) {
		for _, r := range m {
			refs = append(refs, r)
		}
	}
	return refs
}

func (c *Config) imageSecrets() []map[string]SecretRef {
	var out []map[string]SecretRef
	for _, im := range c.Images {
		if im.Script != nil {
			out = append(out, im.Script.Secrets)
		}
	}
	return out
}

// PublishCloudsOf are the clouds that receive cell's image: its upload
// clouds, or the build cloud when there are none (as `run`).
func (c *Config) PublishCloudsOf(cell Cell) []string {
	return c.specTemplate(cell, nil).PublishClouds()
}

// AllClouds are the build cloud and every cloud an image is published to,
// each once, in the order the configuration names them.
func (c *Config) AllClouds() []string {
	var out []string
	if c.Build.Cloud != "" {
		out = append(out, c.Build.Cloud)
	}
	for _, cell := range c.Cells() {
		for _, cl := range c.PublishCloudsOf(cell) {
			if !slices.Contains(out, cl) {
				out = append(out, cl)
			}
		}
	}
	return out
}
