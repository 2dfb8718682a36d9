package service

import (
	"maps"
	"strings"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// upload_clouds items may give their cloud's disk format; an images:
// entry's list replaces the top level's with its formats, and disk_format
// and scratch_dir reach every cell's RunSpec.
func TestUploadCloudsDiskFormats(t *testing.T) {
	file := strings.Replace(imagesBase, "upload_clouds: [c1]\n",
		"upload_clouds: [{name: c1, disk_format: raw}, c2]\ndisk_format: qcow2\nscratch_dir: /var/tmp/grib\n", 1) +
		"images:\n  - base: noble\n    upload_clouds: [c3, {name: c4, disk_format: RAW}]\n"
	c, err := ParseConfig("c.yaml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	want := map[config.Base]map[string]config.DiskFormat{
		config.BaseJammy: {"c1": "raw", "c2": "qcow2"},
		config.BaseNoble: {"c3": "qcow2", "c4": "raw"},
	}
	for _, cell := range c.Cells() {
		spec, err := c.RunSpec(cell, func(string) string { return "x" }, nil)
		if err != nil {
			t.Fatalf("%s: %v", cell.ImageName, err)
		}
		got := map[string]config.DiskFormat{}
		for _, cloud := range spec.UploadClouds {
			got[cloud] = spec.CopyDiskFormat(cloud)
		}
		if !maps.Equal(got, want[cell.Base]) || spec.ScratchDir != "/var/tmp/grib" {
			t.Errorf("%s: formats %v scratch %q, want %v and /var/tmp/grib", cell.ImageName, got, spec.ScratchDir, want[cell.Base])
		}
	}
}

func TestUploadCloudsErrors(t *testing.T) {
	tests := []struct{ name, list, want string }{
		{"unknown key", "[{name: c1, format: raw}]", "c.yaml:3: upload_clouds.0: unknown key format (an item gives name and disk_format)"},
		{"not a list", "c1", "c.yaml:3: upload_clouds: a list of clouds.yaml names"},
		{"format", "[c1, {name: c2, disk_format: vmdk}]", `c.yaml:3: upload_clouds.1.disk_format: "vmdk": use qcow2 or raw`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := strings.Replace(imagesBase, "upload_clouds: [c1]", "upload_clouds: "+tt.list, 1)
			_, err := ParseConfig("c.yaml", []byte(file))
			if !errs.Is(err, errs.KindUsage) || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("err = %v, want a usage error starting %q", err, tt.want)
			}
		})
	}
}
