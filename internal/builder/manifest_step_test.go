package builder_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	. "github.com/runner-image-builder/github-runner-image-builder/internal/builder"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/manifest"
	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// The "manifest" guest step on a testenv.ShellGuest: the guest's
// dpkg-query answer becomes the manifest's packages (snap absent: none),
// the file lands at manifest.GuestPath (0644) byte for byte what the host
// keeps; output that is not dpkg-query's fails the build (exit 6).
func TestManifestStep(t *testing.T) {
	for _, c := range []struct {
		name, dpkg string
		want       []manifest.Package
		code       int
	}{
		{name: "packages", dpkg: "curl\t7.88.1-10\tinstalled\nbash\t5.2.15-2+b2\tinstalled\nold\t1.0\tconfig-files\n",
			want: []manifest.Package{{Name: "bash", Version: "5.2.15-2+b2"}, {Name: "curl", Version: "7.88.1-10"}}},
		{name: "garbage", dpkg: "dpkg-query: error: database broken\n", code: 6},
	} {
		t.Run(c.name, func(t *testing.T) {
			guest := testenv.StartShellGuest(t)
			if err := os.WriteFile(filepath.Join(guest.Dir, "dpkg-query.out"), []byte(c.dpkg), 0o600); err != nil {
				t.Fatal(err)
			}
			_, priv, _ := ed25519.GenerateKey(rand.Reader)
			signer, err := ssh.NewSignerFromKey(priv)
			if err != nil {
				t.Fatal(err)
			}
			var kept []byte
			steps := GuestSteps(GuestConfig{
				Address: func(context.Context) (string, error) { return guest.Addr, nil },
				Signer:  signer, InsecureSkipHostKeyCheck: true,
				Timeouts:     config.Timeouts{SSH: time.Minute, CloudInit: time.Minute, Script: time.Minute},
				Manifest:     func() manifest.Manifest { return manifest.Manifest{Schema: manifest.Schema, BuildID: "b1"} },
				KeepManifest: func(data []byte) { kept = data },
			})
			var run []Step
			for _, s := range steps {
				if s.Name == "ssh" || s.Name == "manifest" {
					run = append(run, s)
				}
			}
			if len(run) != 2 {
				t.Fatalf("steps %v: no manifest step", steps)
			}
			err = (&Runner{}).Run(t.Context(), run)
			if c.code != 0 {
				if errs.ExitCode(err) != c.code || !strings.Contains(err.Error(), "package list") || kept != nil {
					t.Fatalf("err = %v (exit %d), want exit %d naming the package list; kept %q", err, errs.ExitCode(err), c.code, kept)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			inGuest := filepath.Join(guest.Dir, strings.TrimPrefix(manifest.GuestPath, "/"))
			data, err := os.ReadFile(inGuest)
			if err != nil || string(data) != string(kept) {
				t.Fatalf("the guest's manifest %q, %v; the host keeps %q", data, err, kept)
			}
			if fi, _ := os.Stat(inGuest); fi.Mode().Perm() != 0o644 {
				t.Errorf("mode %v, want 0644", fi.Mode().Perm())
			}
			m, err := manifest.Parse(data)
			if err != nil || m.BuildID != "b1" || len(m.Snaps) != 0 || len(m.Packages) != len(c.want) {
				t.Fatalf("manifest %+v, %v", m, err)
			}
			for i, p := range c.want {
				if m.Packages[i] != p {
					t.Errorf("package %d: %v, want %v", i, m.Packages[i], p)
				}
			}
		})
	}
}
