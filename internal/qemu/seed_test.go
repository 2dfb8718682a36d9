package qemu

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
)

func TestSeedFiles(t *testing.T) {
	got := seedFiles([]byte("#cloud-config\n"), nil, "grib-0123", "host1", nil)
	if string(got["user-data"]) != "#cloud-config\n" {
		t.Errorf("user-data = %q", got["user-data"])
	}
	if want := "instance-id: grib-0123\nlocal-hostname: host1\n"; string(got["meta-data"]) != want {
		t.Errorf("meta-data = %q, want %q", got["meta-data"], want)
	}
	if len(got) != 2 {
		t.Errorf("seed has %d files, want user-data and meta-data only", len(got))
	}
	withKeys := seedFiles(nil, nil, "grib-1", "h", []string{"ssh-ed25519 AAAAC3Nz key one\n", `ssh-ed25519 AAAAB "quoted"`})
	wantMeta := "instance-id: grib-1\nlocal-hostname: h\npublic-keys:\n  - \"ssh-ed25519 AAAAC3Nz key one\"\n  - \"ssh-ed25519 AAAAB \\\"quoted\\\"\"\n"
	if string(withKeys["meta-data"]) != wantMeta {
		t.Errorf("meta-data with keys = %q, want %q", withKeys["meta-data"], wantMeta)
	}
	var parsed struct {
		InstanceID string   `yaml:"instance-id"`
		Keys       []string `yaml:"public-keys"`
	}
	if err := yaml.Unmarshal(withKeys["meta-data"], &parsed); err != nil {
		t.Fatalf("meta-data is not YAML: %v", err)
	}
	if parsed.InstanceID != "grib-1" || len(parsed.Keys) != 2 || parsed.Keys[1] != `ssh-ed25519 AAAAB "quoted"` {
		t.Errorf("meta-data parses as %+v", parsed)
	}
	given := seedFiles(nil, []byte("instance-id: x\n"), "ignored", "ignored", []string{"ignored too"})
	if string(given["meta-data"]) != "instance-id: x\n" || given["user-data"] == nil {
		t.Errorf("given meta-data not kept or user-data nil: %q", given)
	}
}

func TestNewInstanceIDIsFresh(t *testing.T) {
	re := regexp.MustCompile(`^grib-[0-9a-f]{16}$`)
	a, b := newInstanceID(), newInstanceID()
	if !re.MatchString(a) || !re.MatchString(b) || a == b {
		t.Errorf("instance IDs %q, %q: want two different grib-<16 hex>", a, b)
	}
}

func TestFindISOTool(t *testing.T) {
	tests := []struct {
		have       []string
		wantPath   string
		wantPrefix []string
	}{
		{[]string{"genisoimage", "xorriso"}, "/bin/genisoimage", nil},
		{[]string{"xorriso", "mkisofs"}, "/bin/xorriso", []string{"-as", "mkisofs"}},
		{[]string{"mkisofs"}, "/bin/mkisofs", nil},
		{nil, "", nil},
	}
	for _, tt := range tests {
		look := func(name string) (string, error) {
			if slices.Contains(tt.have, name) {
				return "/bin/" + name, nil
			}
			return "", errors.New("not found")
		}
		got, err := findISOTool(look)
		if tt.wantPath == "" {
			if err == nil || !strings.Contains(err.Error(), "genisoimage or xorriso") {
				t.Errorf("have %v: error %v, want one naming the packages", tt.have, err)
			}
			continue
		}
		if err != nil || got.path != tt.wantPath || !slices.Equal(got.prefix, tt.wantPrefix) {
			t.Errorf("have %v: got %+v, %v", tt.have, got, err)
		}
		args := got.seedArgs("/o/seed.iso", []string{"meta-data", "user-data"})
		want := append(slices.Clone(tt.wantPrefix), "-quiet", "-output", "/o/seed.iso", "-volid", "cidata", "-joliet", "-rock", "meta-data", "user-data")
		if !slices.Equal(args, want) {
			t.Errorf("seedArgs = %q, want %q", args, want)
		}
	}
}

// The seed must be an ISO9660 volume labelled cidata holding exactly the
// files given, byte for byte (read back with isoinfo, the Rock Ridge names).
func TestWriteSeedISO(t *testing.T) {
	requireTools(t, "genisoimage", "isoinfo")
	tool, err := findISOTool(exec.LookPath)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "seed.iso")
	userData := "#cloud-config\nruncmd:\n  - [sh, -c, 'echo hi > /var/lib/marker']\n"
	files := seedFiles([]byte(userData), nil, "grib-feedface", "h", []string{"ssh-ed25519 AAAA test"})
	if err := writeSeed(context.Background(), config.ChildEnv(os.Getenv), tool, dir, out, files); err != nil {
		t.Fatal(err)
	}
	pvd, err := exec.Command("isoinfo", "-d", "-i", out).Output()
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^Volume id: cidata\s*$`).Match(pvd) {
		t.Errorf("volume id is not cidata:\n%s", pvd)
	}
	for name, want := range files {
		got, err := exec.Command("isoinfo", "-R", "-i", out, "-x", "/"+name).Output()
		if err != nil {
			t.Fatalf("isoinfo -x /%s: %v", name, err)
		}
		if string(got) != string(want) {
			t.Errorf("%s in the seed = %q, want %q", name, got, want)
		}
	}
	listing, err := exec.Command("isoinfo", "-R", "-f", "-i", out).Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(listing)); !slices.Equal(got, []string{"/meta-data", "/user-data"}) {
		t.Errorf("seed lists %q, want /meta-data and /user-data only", got)
	}
	// Only the ISO is left behind in dir: the staging directory is gone.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "seed.iso" {
		t.Errorf("dir holds %v, want only seed.iso", entries)
	}
}
