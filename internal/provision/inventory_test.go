package provision

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

func TestInventory(t *testing.T) {
	const format = `${binary:Package}\t${Version}\n`
	for _, c := range []struct {
		name              string
		table             map[string]answer
		wantDpkg, wantSnp string
		err               string
	}{
		{name: "no snap", table: map[string]answer{
			"dpkg-query -W -f '" + format + "'":                      {stdout: "bash\t5.2\n"},
			"if command -v snap >/dev/null 2>&1; then snap list; fi": {},
		}, wantDpkg: "bash\t5.2\n"},
		{name: "snaps", table: map[string]answer{
			"dpkg-query -W -f '" + format + "'":                      {stdout: "bash\t5.2\n"},
			"if command -v snap >/dev/null 2>&1; then snap list; fi": {stdout: "Name Version Rev\nlxd 5.21 1\n"},
		}, wantDpkg: "bash\t5.2\n", wantSnp: "Name Version Rev\nlxd 5.21 1\n"},
		{name: "dpkg-query fails", table: map[string]answer{
			"dpkg-query -W -f '" + format + "'": {stderr: "dpkg-query: error: no database\n", code: 2},
		}, err: "no database"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := startFakeGuest(t, scripted(t, c.table))
			dpkg, snaps, err := f.dial(t).Inventory(context.Background(), format)
			if c.err != "" {
				if !errs.Is(err, errs.KindBuild) || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("Inventory: %v, want a build error with %q", err, c.err)
				}
				return
			}
			if err != nil || string(dpkg) != c.wantDpkg || string(snaps) != c.wantSnp {
				t.Fatalf("Inventory = %q, %q, %v", dpkg, snaps, err)
			}
		})
	}
}

// WriteFile's command runs for real: the file is written whole, 0644, its
// directory made; the data went on stdin, not on the command line.
func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	f := startFakeGuest(t, runShell(dir))
	g := f.dial(t)
	path := filepath.Join(dir, "etc", "runner-image", "manifest.json")
	data := []byte("{\"schema\": 1}\n")
	for range 2 { // writing again replaces it
		if err := g.WriteFile(context.Background(), path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != string(data) {
		t.Fatalf("file holds %q, %v", got, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	if left, _ := filepath.Glob(path + ".*"); len(left) != 0 {
		t.Errorf("left %v", left)
	}
	for _, r := range f.records() {
		if strings.Contains(r.Cmd, "schema") {
			t.Errorf("the data is on the command line: %q", r.Cmd)
		}
	}
	if err := g.WriteFile(context.Background(), path, data, 0o600); !errs.Is(err, errs.KindInternal) {
		t.Errorf("mode 0600: %v, want an internal error", err)
	}
}

// The shell the manifest's commands run on the guest passes shellcheck.
// Under CI shellcheck must be installed.
func TestInventoryShellcheck(t *testing.T) {
	bin, err := exec.LookPath("shellcheck")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("shellcheck is not installed (apt-get install -y shellcheck)")
		}
		t.Skip("shellcheck is not installed")
	}
	for name, script := range map[string]string{
		"write file": writeFileCommand,
		"snap list":  snapListCommand,
	} {
		cmd := exec.Command(bin, "--shell=sh", "--severity=style", "-")
		cmd.Stdin = strings.NewReader("#!/bin/sh\n" + script + "\n")
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: shellcheck: %v\n%s", name, err, msg)
		}
	}
}
