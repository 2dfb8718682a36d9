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
			out = append(out, Cell{Base: b, Arch: a, ImageName: config.ImageName(c.Prefix, b, a)})
		}
	}
	return out
}

// PublishClouds are the clouds that receive every image: the upload clouds,
// or the build cloud when there are none (as `run`); none for a local
// build without upload clouds.
func (c *Config) PublishClouds() []string {
	if len(c.UploadClouds) > 0 {
		return slices.Clone(c.UploadClouds)
	}
	if c.Builder == config.BuilderLocal {
		return nil
	}
	return []string{c.Cloud}
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
	for _, name := range slices.Sorted(maps.Keys(c.ScriptSecrets)) {
		v, err := c.ScriptSecrets[name].Read(getenv)
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

// specTemplate is the RunSpec of cell without its secrets: what ParseConfig
// checks by RunSpec.Validate, the rules of `run`.
func (c *Config) specTemplate(cell Cell, protect []string) config.RunSpec {
	spec := config.RunSpec{
		ImageName: cell.ImageName, Cloud: c.Cloud, Arch: cell.Arch, Base: cell.Base, Prefix: c.Prefix,
		KeepRevisions: c.KeepRevisions, UploadClouds: slices.Clone(c.UploadClouds), Visibility: c.Visibility,
		AdoptUnmarked: c.AdoptUnmarked, Protect: slices.Clone(protect),
		RunnerVersion: c.RunnerVersion, RunnerSHA256: c.RunnerSHA256, RunnerRepo: c.RunnerRepo, RunnerAPIURL: c.RunnerAPIURL,
		Flavor: c.Flavor, Network: c.Network, Proxy: c.Proxy, ScriptURL: c.ScriptURL,
		UserDataFile: c.UserDataFile, VerifyScriptFile: c.VerifyScriptFile, SkipDefaultChecks: c.SkipDefaultChecks,
		Timeouts: c.Timeouts, InsecureSkipHostKeyCheck: c.InsecureSkipHost,
		Builder: c.Builder, Isolated: c.Isolated,
		Secrets: map[string]config.Secret{},
	}
	if c.Builder == config.BuilderLocal {
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
			Cloud: c.Cloud, Arch: a, Prefix: c.Prefix, Bases: slices.Clone(c.Bases),
			BaseImageURL: c.BaseImageURL, Builder: c.Builder, CacheDir: cacheDir,
		})
	}
	return out
}
