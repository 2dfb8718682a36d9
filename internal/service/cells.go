package service

import (
	"maps"
	"path/filepath"
	"slices"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
)

// Cell is one image of the matrix: a base and an arch, published under
// ImageName (<prefix>-<base>-<arch>, the charm's convention) in every cloud
// of Config.PublishClouds.
type Cell struct {
	Base      config.Base `json:"base"`
	Arch      config.Arch `json:"arch"`
	ImageName string      `json:"name"`
}

// Tags is the charm's image relation tag of the cell: "<arch>,<base>".
func (c Cell) Tags() string { return string(c.Arch) + "," + string(c.Base) }

// Cells lists the matrix, arch by arch, each in the configured base order
// (the first base of the first arch is the charm's relation "id").
func (c *Config) Cells() []Cell {
	var out []Cell
	for _, a := range c.Arches {
		for _, b := range c.Bases {
			out = append(out, Cell{Base: b, Arch: a, ImageName: config.ImageName(c.Build.Prefix, b, a)})
		}
	}
	return out
}

// PublishClouds are the clouds that receive an image the top level's
// settings publish: the upload clouds, or the build cloud when there are
// none (as `run`); none for a local build without upload clouds. A cell's
// own are PublishCloudsOf.
func (c *Config) PublishClouds() []string {
	if len(c.Build.UploadClouds) > 0 {
		return slices.Clone(c.Build.UploadClouds)
	}
	if c.Build.Builder == config.BuilderLocal {
		return nil
	}
	return []string{c.Build.Cloud}
}

// RunSpec is the `run` of one cell: the same validated value `run` builds
// from its flags. Secrets are read now (files, environment) and never kept
// in the Config. protect is passed on as RunSpec.Protect.
func (c *Config) RunSpec(cell Cell, getenv func(string) string, protect []string) (config.RunSpec, error) {
	spec := c.specTemplate(cell, protect)
	if c.RunnerToken != nil {
		tok, err := c.RunnerToken.Read(getenv)
		if err != nil {
			return config.RunSpec{}, err
		}
		spec.GitHubToken = tok
	}
	secrets := c.scriptSecrets(cell)
	for _, name := range slices.Sorted(maps.Keys(secrets)) {
		v, err := secrets[name].Read(getenv)
		if err != nil {
			return config.RunSpec{}, err
		}
		spec.Secrets[name] = v
	}
	if err := spec.Validate(); err != nil {
		return config.RunSpec{}, err
	}
	return spec, nil
}

// specTemplate is the RunSpec of cell without its secrets: the top level's
// settings with the cell's `images:` entry over them; what ParseConfig
// checks by RunSpec.Validate, the rules of `run`.
func (c *Config) specTemplate(cell Cell, protect []string) config.RunSpec {
	spec := c.Build
	spec.ImageName, spec.Arch, spec.Base = cell.ImageName, cell.Arch, cell.Base
	spec.UploadClouds, spec.Protect = slices.Clone(c.Build.UploadClouds), slices.Clone(protect)
	spec.UploadDiskFormats = maps.Clone(c.Build.UploadDiskFormats)
	spec.Secrets = map[string]config.Secret{}
	if i := c.imageIndex(cell); i >= 0 {
		c.Images[i].apply(&spec)
	}
	if c.Build.Builder == config.BuilderLocal {
		spec.Output = filepath.Join(c.OutputDir, cell.ImageName+".qcow2")
	}
	return spec
}

// InitSpecs are the `init`s that seed (or refresh) the matrix's base images:
// one per arch, with the bases of the matrix.
func (c *Config) InitSpecs(cacheDir string) []config.InitSpec {
	var out []config.InitSpec
	for _, a := range c.Arches {
		out = append(out, config.InitSpec{
			Cloud: c.Build.Cloud, Arch: a, Prefix: c.Build.Prefix, Bases: slices.Clone(c.Bases),
			BaseImageURL: c.BaseImageURL, Builder: c.Build.Builder, CacheDir: cacheDir, HostProxy: c.Build.HostProxy,
		})
	}
	return out
}
