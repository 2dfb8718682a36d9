package build_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/build"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/release"
)

// fixedRelease resolves every request to one release and counts the calls.
type fixedRelease struct {
	rel   release.Release
	calls int
}

func (f *fixedRelease) Resolve(context.Context, string, config.Arch, string) (release.Release, error) {
	f.calls++
	return f.rel, nil
}

// Prepare renders the recipe for the guest's view of --proxy: a local
// guest never reaches a proxy on this host's loopback (refused), an
// OpenStack server reaches it as given; --user-data is kept as given; an
// isolated local guest reaches no proxy at all.
func TestPrepareGuestProxy(t *testing.T) {
	rel := release.Release{Repo: config.DefaultRunnerRepo, Version: "2.330.0", Arch: config.ArchX64,
		URL:    "https://github.com/actions/runner/releases/download/v2.330.0/actions-runner-linux-x64-2.330.0.tar.gz",
		SHA256: strings.Repeat("ab", 32)}
	given := filepath.Join(t.TempDir(), "user-data")
	if err := os.WriteFile(given, []byte("#cloud-config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	tests := []struct {
		name     string
		spec     config.RunSpec
		want     string // in the user-data
		wantNot  string
		given    bool // the user-data is the --user-data file
		usageErr bool // refused with a usage error
	}{
		{name: "local, no proxy", spec: config.RunSpec{Builder: config.BuilderLocal}, wantNot: "PROXY="},
		{name: "local, proxy the guest reaches as is", spec: config.RunSpec{Builder: config.BuilderLocal, Proxy: "squid.internal:3128"},
			want: "PROXY='squid.internal:3128'"},
		{name: "local, loopback proxy", spec: config.RunSpec{Builder: config.BuilderLocal, Proxy: "127.0.0.1:3128"},
			usageErr: true}, // the guest never reaches the host's loopback
		{name: "openstack, loopback proxy", spec: config.RunSpec{Builder: config.BuilderOpenStack, Proxy: "127.0.0.1:3128"},
			want: "PROXY='127.0.0.1:3128'"},
		{name: "local, --user-data", spec: config.RunSpec{Builder: config.BuilderLocal, Proxy: "squid.internal:3128", UserDataFile: given},
			given: true},
		{name: "local, isolated", spec: config.RunSpec{Builder: config.BuilderLocal, Proxy: "127.0.0.1:3128", Isolated: true},
			usageErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.spec.Arch, tt.spec.Base = config.ArchX64, config.BaseNoble
			res := &fixedRelease{rel: rel}
			job, err := (&build.Builds{Resolver: res}).Prepare(t.Context(), log, tt.spec)
			if tt.usageErr {
				if !errs.Is(err, errs.KindUsage) {
					t.Fatalf("err = %v, want a usage error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.given {
				if string(job.UserData) != "#cloud-config\n" || res.calls != 0 {
					t.Errorf("--user-data: got %q after %d release look-ups; want the file as given, no look-up", job.UserData, res.calls)
				}
				return
			}
			if res.calls != 1 || job.Runner != rel {
				t.Errorf("release looked up %d times, job runner %+v; want once, %+v", res.calls, job.Runner, rel)
			}
			if tt.want != "" && !bytes.Contains(job.UserData, []byte(tt.want)) {
				t.Errorf("the recipe lacks %q:\n%s", tt.want, job.UserData)
			}
			if tt.wantNot != "" && bytes.Contains(job.UserData, []byte(tt.wantNot)) {
				t.Errorf("the recipe has %q:\n%s", tt.wantNot, job.UserData)
			}
		})
	}
}
