package release

import (
	"strings"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
)

func TestSHAFromNotes(t *testing.T) {
	a64 := strings.Repeat("a", 64)
	b64 := strings.Repeat("b", 64)
	tests := []struct {
		name    string
		notes   string
		arch    config.Arch
		want    string
		wantErr string
	}{
		{"plain", "<!-- BEGIN SHA linux-x64 -->" + a64 + "<!-- END SHA linux-x64 -->", config.ArchX64, a64, ""},
		{"spaces and upper case", "x <!-- BEGIN SHA linux-x64 -->\n  " + strings.ToUpper(a64) + " \n<!-- END SHA linux-x64 --> y", config.ArchX64, a64, ""},
		{"arm is not arm64", "<!-- BEGIN SHA linux-arm64 -->" + a64 + "<!-- END SHA linux-arm64 --><!-- BEGIN SHA linux-arm -->" + b64 + "<!-- END SHA linux-arm -->", config.ArchARM, b64, ""},
		{"arm64 is not arm", "<!-- BEGIN SHA linux-arm -->" + b64 + "<!-- END SHA linux-arm --><!-- BEGIN SHA linux-arm64 -->" + a64 + "<!-- END SHA linux-arm64 -->", config.ArchARM64, a64, ""},
		{"other hashes first are ignored", b64 + " <!-- BEGIN SHA osx-x64 -->" + b64 + "<!-- END SHA osx-x64 --> <!-- BEGIN SHA linux-x64 -->" + a64 + "<!-- END SHA linux-x64 -->", config.ArchX64, a64, ""},
		{"same value twice", strings.Repeat("<!-- BEGIN SHA linux-x64 -->"+a64+"<!-- END SHA linux-x64 -->", 2), config.ArchX64, a64, ""},
		{"no marker", "only " + a64 + " here", config.ArchX64, "", "no"},
		{"marker for another arch", "<!-- BEGIN SHA linux-x64 -->" + a64 + "<!-- END SHA linux-x64 -->", config.ArchS390X, "", "no"},
		{"unterminated", "<!-- BEGIN SHA linux-x64 -->" + a64, config.ArchX64, "", "without"},
		{"short", "<!-- BEGIN SHA linux-x64 -->abc<!-- END SHA linux-x64 -->", config.ArchX64, "", "64 hex"},
		{"template placeholder", "<!-- BEGIN SHA linux-x64 --><LINUX_X64_SHA><!-- END SHA linux-x64 -->", config.ArchX64, "", "64 hex"},
		{"two values", "<!-- BEGIN SHA linux-x64 -->" + a64 + "<!-- END SHA linux-x64 --><!-- BEGIN SHA linux-x64 -->" + b64 + "<!-- END SHA linux-x64 -->", config.ArchX64, "", "two different"},
		{"end marker of another arch", "<!-- BEGIN SHA linux-x64 -->" + a64 + "<!-- END SHA linux-arm64 -->", config.ArchX64, "", "without"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SHAFromNotes(tt.notes, tt.arch)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("SHAFromNotes = %q, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("SHAFromNotes = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestShaFromDigest(t *testing.T) {
	a64 := strings.Repeat("a", 64)
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"sha256:" + a64, a64, true},
		{"sha256:" + strings.ToUpper(a64), a64, true},
		{"", "", false},
		{"sha512:" + a64, "", false},
		{"sha256:" + a64[:63], "", false},
		{a64, "", false},
	}
	for _, tt := range tests {
		got, err := shaFromDigest(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("shaFromDigest(%q) = %q, %v; want %q ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestParseRelease(t *testing.T) {
	tests := []struct {
		name, json, wantVersion, wantErr string
		wantAssets                       int
	}{
		{"full", `{"tag_name":"v2.331.0","body":"notes","assets":[{"name":"a","browser_download_url":"http://127.0.0.1/a","digest":"sha256:x"},{"name":"b","digest":null}]}`, "2.331.0", "", 2},
		{"null body", `{"tag_name":"v1.2.3","body":null}`, "1.2.3", "", 0},
		{"no v", `{"tag_name":"2.331.0"}`, "", "vX.Y.Z", 0},
		{"pre-release suffix", `{"tag_name":"v2.331.0-rc1"}`, "", "vX.Y.Z", 0},
		{"draft", `{"tag_name":"v2.331.0","draft":true}`, "", "draft", 0},
		{"not json", `<html>`, "", "decoding", 0},
		{"array", `[]`, "", "decoding", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := parseRelease([]byte(tt.json))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseRelease = %+v, %v; want error containing %q", g, err, tt.wantErr)
				}
				return
			}
			if err != nil || g.Version != tt.wantVersion || len(g.Assets) != tt.wantAssets {
				t.Fatalf("parseRelease = %+v, %v; want version %s with %d assets", g, err, tt.wantVersion, tt.wantAssets)
			}
		})
	}
}

func FuzzSHAFromNotes(f *testing.F) {
	f.Add("<!-- BEGIN SHA linux-x64 -->"+strings.Repeat("a", 64)+"<!-- END SHA linux-x64 -->", "x64")
	f.Add("no markers", "arm")
	f.Fuzz(func(t *testing.T, notes, arch string) {
		a := config.Arch(arch)
		got, err := SHAFromNotes(notes, a)
		if err != nil {
			return
		}
		if !sha256RE.MatchString(got) || strings.ToLower(got) != got {
			t.Fatalf("SHAFromNotes returned %q, not 64 lowercase hex digits", got)
		}
		if !strings.Contains(strings.ToLower(notes), got) {
			t.Fatalf("SHAFromNotes returned %q, which the notes do not contain", got)
		}
		if !strings.Contains(notes, "<!-- BEGIN SHA linux-"+arch+" -->") {
			t.Fatalf("SHAFromNotes returned %q without the arch's marker", got)
		}
	})
}

func FuzzParseRelease(f *testing.F) {
	f.Add([]byte(`{"tag_name":"v2.331.0","body":"x","assets":[{"name":"a","browser_download_url":"u","digest":"sha256:00"}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := parseRelease(data)
		if err != nil {
			return
		}
		if ValidateVersion(g.Version) != nil || g.Tag != "v"+g.Version {
			t.Fatalf("parseRelease accepted tag %q as version %q", g.Tag, g.Version)
		}
		for _, a := range []config.Arch{config.ArchX64, config.ArchARM} {
			if sha, err := SHAFromNotes(g.Body, a); err == nil && ValidateSHA256(sha) != nil {
				t.Fatalf("invalid SHA %q from notes", sha)
			}
		}
	})
}
