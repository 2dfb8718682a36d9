package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/manifest"
)

func writeManifest(t *testing.T, path string, pkgs ...manifest.Package) {
	t.Helper()
	data, err := manifest.Manifest{Schema: manifest.Schema, Packages: pkgs}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestManifestDiff(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	env := []string{"HOME=" + dir, "XDG_STATE_HOME=" + state}
	kept := config.ManifestsDir(filepath.Join(state, config.AppName, "grib"))
	service := filepath.Join(dir, "service-manifests")
	oldFile := filepath.Join(dir, "old.manifest.json")
	writeManifest(t, oldFile, manifest.Package{Name: "bash", Version: "5.1"}, manifest.Package{Name: "curl", Version: "7.88"})
	writeManifest(t, filepath.Join(kept, "img-new.json"), manifest.Package{Name: "bash", Version: "5.2"},
		manifest.Package{Name: "jq", Version: "1.6"})
	writeManifest(t, filepath.Join(service, "img-svc.json"), manifest.Package{Name: "bash", Version: "5.1"})
	notManifest := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(notManifest, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{name: "file to kept image ID", args: []string{oldFile, "img-new"}, stdout: "~ bash 5.1 -> 5.2\n- curl 7.88\n+ jq 1.6\n"},
		{name: "kept ID to file", args: []string{"img-new", oldFile}, stdout: "~ bash 5.2 -> 5.1\n+ curl 7.88\n- jq 1.6\n"},
		{name: "the same", args: []string{oldFile, oldFile}, stdout: ""},
		{name: "service's directory", args: []string{"img-svc", oldFile, "--manifests-dir", service}, stdout: "+ curl 7.88\n"},
		{name: "unknown ID", args: []string{oldFile, "img-none"}, code: 5, stderr: "Error: manifest img-none: no such file, nor a manifest of an image with that ID kept in " + state},
		{name: "service's ID without its directory", args: []string{"img-svc", oldFile}, code: 5, stderr: "--manifests-dir adds a directory"},
		{name: "glob is no ID", args: []string{"img-*", oldFile}, code: 5, stderr: "Error: manifest img-*: no such file"},
		{name: "not a manifest", args: []string{notManifest, oldFile}, code: 2, stderr: "Error: manifest " + notManifest + ": not a manifest (JSON)"},
		{name: "a directory", args: []string{dir, oldFile}, code: 2, stderr: "is a directory"},
		{name: "one argument", args: []string{oldFile}, code: 2, stderr: "Error: manifest diff: give two arguments"},
		{name: "no subcommand", args: nil, code: 2, stderr: "Error: manifest: give a subcommand: diff"},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"manifest"}
			if c.args != nil {
				args = append(args, "diff")
				args = append(args, c.args...)
			}
			r := runApp(t, env, Backend{}, args...)
			if r.code != c.code || r.stdout != c.stdout || !strings.Contains(r.stderr, c.stderr) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr with %q", r.code, r.stdout, r.stderr, c.code, c.stdout, c.stderr)
			}
			if c.code != 0 && strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
				t.Errorf("stderr is more than one line: %q", r.stderr)
			}
		})
	}
}
