package config

import (
	"strings"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

func TestInitBaseImageSourceValidate(t *testing.T) {
	good := InitSpec{Cloud: "c", Arch: ArchX64, Bases: []Base{BaseNoble}, Builder: BuilderOpenStack, CacheDir: "/cache"}
	tests := []struct {
		name   string
		change func(*InitSpec)
		want   string // "" means valid
	}{
		{"file", func(s *InitSpec) { s.BaseImageFile = "/img.qcow2" }, ""},
		{"file needs one base", func(s *InitSpec) { s.BaseImageFile = "/img"; s.Bases = Bases() }, "exactly one --base-image"},
		{"file and mirror", func(s *InitSpec) { s.BaseImageFile = "/img"; s.BaseImageURL = "https://m" }, "replaces the download"},
		{"serial", func(s *InitSpec) { s.BaseImageSerial = "20251113.1" }, ""},
		{"bad serial", func(s *InitSpec) { s.BaseImageSerial = "last" }, "--base-image-serial"},
		{"sha256", func(s *InitSpec) { s.BaseImageSHA256 = strings.Repeat("a", 64) }, ""},
		{"bad sha256", func(s *InitSpec) { s.BaseImageSHA256 = "abc" }, "--base-image-sha256"},
		{"property", func(s *InitSpec) { s.BaseImageProperties = map[string]string{"hw_disk_bus": "scsi"} }, ""},
		{"reserved property", func(s *InitSpec) { s.BaseImageProperties = map[string]string{"os_distro": "x"} }, "sets this property itself"},
		{"bad property name", func(s *InitSpec) { s.BaseImageProperties = map[string]string{"a b": "x"} }, "property name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := good
			tt.change(&s)
			err := s.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errs.Is(err, errs.KindUsage) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want a usage error with %q", err, tt.want)
			}
		})
	}
}

func TestParseProperties(t *testing.T) {
	got, err := ParseProperties("--p", []string{"a=1", "b=x=y", "c="})
	if err != nil || got["a"] != "1" || got["b"] != "x=y" || got["c"] != "" || len(got) != 3 {
		t.Errorf("got %v, %v", got, err)
	}
	for _, bad := range [][]string{{"novalue"}, {"a=1", "a=2"}, {"architecture=x"}} {
		if _, err := ParseProperties("--p", bad); !errs.Is(err, errs.KindUsage) {
			t.Errorf("ParseProperties(%q) = %v, want a usage error", bad, err)
		}
	}
}

func TestSkipDefaultChecksNeedsUserDataAndVerifyScript(t *testing.T) {
	for _, tt := range []struct {
		userData, verify string
		ok               bool
	}{{"u", "v", true}, {"", "v", false}, {"u", "", false}} {
		in := goodInput()
		in.SkipDefaultChecks, in.UserDataFile, in.VerifyScriptFile = true, tt.userData, tt.verify
		_, err := NewRunSpec(in)
		if (err == nil) != tt.ok || (err != nil && !strings.Contains(err.Error(), "--skip-default-checks")) {
			t.Errorf("user-data %q verify %q: %v", tt.userData, tt.verify, err)
		}
	}
}
