package config

import (
	"strings"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// The local builder's base image flags: where the base comes from.
func TestLocalBaseImageFlags(t *testing.T) {
	local := func(in *RunInput) { in.Builder, in.Output, in.Cloud = "local", "/tmp/out.qcow2", "" }
	tests := []struct {
		name   string
		change func(*RunInput)
		want   string // "" accepts
	}{
		{"cache", func(in *RunInput) { local(in); in.CacheDir = "/c" }, ""},
		{"file", func(in *RunInput) { local(in); in.BaseImageFile = "/img.qcow2" }, ""},
		{"file with sha", func(in *RunInput) { local(in); in.BaseImageFile, in.BaseImageSHA256 = "/i", strings.ToUpper(testSHA) }, ""},
		{"mirror and serial", func(in *RunInput) {
			local(in)
			in.BaseImageURL, in.BaseImageSerial = "http://127.0.0.1:8080/mirror", "20251113"
		}, ""},
		{"file and mirror", func(in *RunInput) { local(in); in.BaseImageFile, in.BaseImageURL = "/i", "https://m" }, "drop --base-image-url"},
		{"file and serial", func(in *RunInput) { local(in); in.BaseImageFile, in.BaseImageSerial = "/i", "current" }, "drop --base-image-url and --base-image-serial"},
		{"blank file", func(in *RunInput) { local(in); in.BaseImageFile = "  " }, "--base-image-file"},
		{"bad serial", func(in *RunInput) { local(in); in.BaseImageSerial = "yesterday" }, "--base-image-serial"},
		{"bad sha", func(in *RunInput) { local(in); in.BaseImageSHA256 = "abc" }, "--base-image-sha256"},
		{"bad mirror", func(in *RunInput) { local(in); in.BaseImageURL = "ftp://m" }, "--base-image-url"},
		{"openstack with file", func(in *RunInput) { in.BaseImageFile = "/i" }, "--base-image-file: applies only to --builder local"},
		{"openstack with mirror", func(in *RunInput) { in.BaseImageURL = "https://m" }, "--base-image-url: applies only"},
		{"openstack with sha", func(in *RunInput) { in.BaseImageSHA256 = testSHA }, "--base-image-sha256: applies only"},
		{"openstack with serial", func(in *RunInput) { in.BaseImageSerial = "current" }, "--base-image-serial: applies only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := goodInput()
			tt.change(&in)
			s, err := NewRunSpec(in)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("NewRunSpec: %v", err)
				}
				if s.BaseImageSHA256 != "" && s.BaseImageSHA256 != testSHA {
					t.Errorf("sha256 not lower-cased: %q", s.BaseImageSHA256)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || errs.ExitCode(err) != 2 {
				t.Fatalf("NewRunSpec = %v, want a usage error with %q", err, tt.want)
			}
		})
	}
}
