package builder

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/baseimage"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
)

// Every path that fetches a base image from a mirror checks its serial
// against the state directory: against a loopback mirror that serves
// nothing, each asks for current's unpacked/build-info.txt first and fails
// saying so (without the check it would ask for SHA256SUMS).
func TestBaseImageFetchesCheckTheSerial(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked = append(asked, r.URL.Path)
		mu.Unlock()
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	env := map[string]string{"HOME": dir, "XDG_STATE_HOME": filepath.Join(dir, "state"), "TMPDIR": dir}
	o := &OpenStack{Connect: fakeClouds(newFakeCloud("build")), Getenv: func(k string) string { return env[k] }, Version: "v-test"}
	local := &Local{OpenStack: o}
	initSpec := config.InitSpec{Cloud: "build", Arch: config.ArchX64, Bases: []config.Base{config.BaseNoble},
		BaseImageURL: srv.URL, Builder: config.BuilderOpenStack, CacheDir: filepath.Join(dir, "cache")}
	localInit := initSpec
	localInit.Cloud, localInit.Builder = "", config.BuilderLocal
	run := testSpec(t, func(s *config.RunSpec) {
		s.Builder, s.Output, s.BaseImageURL, s.CacheDir = config.BuilderLocal, filepath.Join(dir, "out.qcow2"), srv.URL, filepath.Join(dir, "cache")
	})
	tests := []struct {
		name string
		do   func(context.Context) error
	}{
		{"init", func(ctx context.Context) error { return o.Init(ctx, nil, initSpec) }},
		{"init --builder local", func(ctx context.Context) error { return local.Init(ctx, nil, localInit) }},
		{"run --builder local", func(ctx context.Context) error {
			_, err := local.Build(ctx, nil, testJob(t, run, []byte("#cloud-config\n")))
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			asked = nil
			mu.Unlock()
			err := tt.do(context.Background())
			mu.Lock()
			defer mu.Unlock()
			if err == nil || !strings.Contains(err.Error(), "cannot tell which serial") || !strings.Contains(err.Error(), "--base-image-serial") {
				t.Errorf("err = %v, want the serial of current missing, with --base-image-serial", err)
			}
			if len(asked) == 0 || asked[0] != "/noble/current/"+baseimage.BuildInfoPath {
				t.Errorf("asked the mirror for %v, want %s first", asked, "/noble/current/"+baseimage.BuildInfoPath)
			}
		})
	}
}
