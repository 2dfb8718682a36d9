package service_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"

	"github.com/runner-image-builder/github-runner-image-builder/internal/builder"
	"github.com/runner-image-builder/github-runner-image-builder/internal/cli"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/faultproxy"
	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// flavorMedium is the test stack's second flavor meeting the builder's
// minimum (.ci/harness/grib_seed.py).
const flavorMedium = "it.medium"

// Two images of one service configuration whose images: entries give them
// different scripts and flavors are built each with its own: the builder
// fetches each image's own script (from a loopback HTTP server) and asks
// Nova for each builder server with its own flavor. Guest-less: the fault
// proxy in front of the real OpenStack answers every "create server" with
// a 400 (not retried), so no server exists and no guest boots; which rule
// fired tells which flavor each image's builder asked for.
//
//	GRIB_IT=1 go test -p 1 -count=1 -run TestServiceImagesOwnSettingsOnStack ./internal/service/ -timeout 15m
func TestServiceImagesOwnSettingsOnStack(t *testing.T) {
	testenv.Require(t)
	p := testenv.Prefix(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	admin := testenv.MustConnect(t, ctx, testenv.BuildCloud)
	proxy := buildCloudFaultProxy(t)
	bases := []config.Base{config.BaseJammy, config.BaseNoble}
	t.Cleanup(func() { testenv.RemoveBuildLeftovers(t, p, nil) })

	// Base images that are never booted, with the properties init gives them.
	dir := t.TempDir()
	seed := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(seed, bytes.Repeat([]byte{2}, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(bytes.Repeat([]byte{2}, 4096))
	props := map[string]string{builder.PropPrefix: p, builder.PropBaseSHA256: hex.EncodeToString(sum[:])}
	for _, b := range bases {
		if _, err := testenv.UploadImage(ctx, admin.Image, config.BaseImageName(p, b, config.ArchX64), seed, "raw", props); err != nil {
			t.Fatal(err)
		}
	}

	// Each image's script, served on loopback; what was fetched is recorded.
	var mu sync.Mutex
	fetched := map[string]int{}
	scripts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		fetched[r.URL.Path]++
		mu.Unlock()
		fmt.Fprintf(w, "#!/bin/sh\necho %s\n", r.URL.Path)
	}))
	defer scripts.Close()

	// One rule per (image, flavor): a 400 on that image's builder server
	// created with that flavor; then a 400 on any other create server, so
	// that nothing is ever created whatever the body looks like.
	ids := map[string]string{}
	pages, err := flavors.ListDetail(admin.Compute, nil).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all, err := flavors.ExtractFlavors(pages)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range all {
		ids[f.Name] = f.ID
	}
	flavorOf := map[config.Base]string{config.BaseJammy: testenv.FlavorMin, config.BaseNoble: flavorMedium}
	rules := map[string]*faultproxy.Handle{} // "base flavor" → rule
	for _, b := range bases {
		for _, fl := range []string{testenv.FlavorMin, flavorMedium} {
			if ids[fl] == "" {
				t.Fatalf("the test stack has no flavor %s", fl)
			}
			name := `"name":\s*"` + regexp.QuoteMeta(config.BuilderName(p, b, config.ArchX64)) + `"`
			ref := `"flavorRef":\s*"` + regexp.QuoteMeta(ids[fl]) + `"`
			h, err := proxy.Add(faultproxy.Rule{Name: string(b) + " " + fl, Method: "POST", Service: faultproxy.Compute, Path: `/servers$`,
				Body: `(?s)` + name + `.*` + ref + `|` + ref + `.*` + name, Fault: faultproxy.Status(400)})
			if err != nil {
				t.Fatal(err)
			}
			rules[string(b)+" "+fl] = h
		}
	}
	other, err := proxy.Add(faultproxy.Rule{Name: "other", Method: "POST", Service: faultproxy.Compute, Path: `/servers$`, Fault: faultproxy.Status(400)})
	if err != nil {
		t.Fatal(err)
	}

	recipe, verify, environ := proxiedBuildFiles(t, proxy, dir)
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`cloud: %s
prefix: %s
matrix: {bases: [jammy, noble], arches: [x64]}
network: %s
runner: {version: 2.330.0}
user_data_file: %s
verify_script_file: %s
skip_default_checks: true
retry: {attempts: 2, min_delay: 10ms, max_delay: 20ms}
state_dir: %s
schedule: {base_image_refresh: 0s}
images:
  - base: jammy
    flavor: %s
    script: {url: "%s/jammy.sh"}
  - base: noble
    flavor: %s
    script: {url: "%s/noble.sh"}
`, testenv.BuildCloud, p, testenv.Network, recipe, verify, filepath.Join(dir, "state"),
		testenv.FlavorMin, scripts.URL, flavorMedium, scripts.URL)), 0o600); err != nil {
		t.Fatal(err)
	}

	var out, errb testenv.LockedBuffer
	app := &cli.App{Stdout: &out, Stderr: &errb, Environ: environ,
		Backend: stackBackend(config.Getenv(environ))}
	code := app.Main(ctx, []string{"--log-level", "debug", "build", "--config", cfg})
	t.Logf("exit %d\nstdout %s\nstderr (tail) %s", code, out.String(), tail(errb.String(), 20))
	for _, b := range bases {
		name := config.ImageName(p, b, config.ArchX64)
		if !strings.Contains(out.String(), name+"  failed") {
			t.Errorf("stdout %q: want %s reported failed (its create server got a 400)", out.String(), name)
		}
		for _, fl := range []string{testenv.FlavorMin, flavorMedium} {
			want := 0
			if fl == flavorOf[b] {
				want = 1 // a 400 is not retried
			}
			if got := rules[string(b)+" "+fl].Fired(); got != want {
				t.Errorf("the %s builder server was asked for with flavor %s %d times, want %d", b, fl, got, want)
			}
		}
	}
	if other.Fired() != 0 {
		t.Errorf("%d create-server requests matched no (image, flavor) rule", other.Fired())
	}
	mu.Lock()
	defer mu.Unlock()
	if fetched["/jammy.sh"] != 1 || fetched["/noble.sh"] != 1 || len(fetched) != 2 {
		t.Errorf("scripts fetched %v, want /jammy.sh and /noble.sh once each", fetched)
	}
}
