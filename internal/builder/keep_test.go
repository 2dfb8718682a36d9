package builder

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// With KeepOnFailure a failed build leaves its server and says so in its
// error; the sweep of that server (by ID) removes it and nothing else, and
// a server that is not one of the prefix's builders is refused.
func TestKeepOnFailureKeepsTheServerUntilSweptByID(t *testing.T) {
	build := newFakeCloud("build")
	storeBase(build, "p")
	build.serverFault = "No valid host was found"
	o := testOpenStack(t, build)
	spec := testSpec(t, func(s *config.RunSpec) { s.KeepOnFailure = true })
	_, err := o.Build(context.Background(), nil, testJob(t, spec, nil))
	var kept *config.KeptBuilder
	if !errors.As(err, &kept) || errs.ExitCode(err) != 6 {
		t.Fatalf("err = %v (exit %d), want a build failure naming the kept builder", err, errs.ExitCode(err))
	}
	ids := slices.Collect(maps.Keys(build.servers))
	if len(ids) != 1 || kept.Server != ids[0] || kept.Name != config.BuilderName("p", spec.Base, spec.Arch) || kept.Cloud != "build" {
		t.Fatalf("kept %+v, servers %v: want the one builder server", kept, ids)
	}
	if kept.Addr != "" {
		t.Errorf("kept.Addr = %q: SSH never answered", kept.Addr)
	}
	ssh, remove := kept.Commands()
	if ssh != "" || remove != "github-runner-image-builder --os-cloud build sweep --prefix p --server "+kept.Server {
		t.Errorf("commands %q, %q", ssh, remove)
	}

	sweep := config.SweepSpec{Cloud: "build", Prefix: "p", OlderThan: config.MinSweepAge, Server: "not-" + kept.Server}
	if _, err := o.Sweep(context.Background(), nil, sweep); errs.KindOf(err) != errs.KindNotFound {
		t.Errorf("sweep of an unknown server: %v, want not found", err)
	}
	sweep.Server = kept.Server
	swept, err := o.Sweep(context.Background(), nil, sweep)
	if err != nil || len(swept) != 1 || swept[0].ID != kept.Server || len(build.servers) != 0 {
		t.Errorf("sweep --server: %v %v, servers left %v", swept, err, build.servers)
	}
	if _, ok := build.keypairs[config.KeypairName("p")]; !ok {
		t.Error("sweep --server removed the keypair: it removes the one server only")
	}
}

// Without KeepOnFailure, and when the build is interrupted, the server goes.
func TestKeepOnFailureOnlyOnFailure(t *testing.T) {
	for _, keep := range []bool{false, true} {
		build := newFakeCloud("build")
		storeBase(build, "p")
		build.serverFault = "No valid host was found"
		o := testOpenStack(t, build)
		ctx, cancel := context.WithCancel(context.Background())
		spec := testSpec(t, func(s *config.RunSpec) { s.KeepOnFailure = keep })
		job := testJob(t, spec, nil)
		if keep { // interrupted as the server step ends
			job.Observe = func(ev Event) {
				if ev.Kind == StepEnded && ev.Step == "server" {
					cancel()
				}
			}
		}
		_, err := o.Build(ctx, nil, job)
		cancel()
		var kept *config.KeptBuilder
		if errors.As(err, &kept) || len(build.servers) != 0 {
			t.Errorf("keep %v: err %v, servers %v: want the server removed", keep, err, build.servers)
		}
	}
}

// A kept local VM: the ssh command with the pinned host key in a 0600
// known_hosts file of the VM's directory, and a wait that only the build's
// end (Ctrl-C) finishes.
func TestHoldForDebugging(t *testing.T) {
	dir := t.TempDir()
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	lines := make(chan string, 4)
	say := func(format string, args ...any) { lines <- fmt.Sprintf(format, args...) }
	returned := make(chan struct{})
	go func() {
		holdForDebugging(ctx, say, dir, "/state/id_ed25519", config.SSHJump{}, &guestEndpoint{addr: "127.0.0.1:2222", user: "ubuntu", hostKey: hostKey})
		close(returned)
	}()
	first, second := <-lines, <-lines
	kh := filepath.Join(dir, "known_hosts")
	want := "  Reach it:  " + config.SSHCommand("127.0.0.1:2222", "ubuntu", "/state/id_ed25519", kh)
	if !strings.Contains(first, "left running for debugging") || second != want {
		t.Errorf("said %q, %q; want the ssh line %q", first, second, want)
	}
	fi, err := os.Stat(kh)
	data, _ := os.ReadFile(kh)
	if err != nil || fi.Mode().Perm() != 0o600 || !strings.HasPrefix(string(data), "[127.0.0.1]:2222 "+hostKey.Type()+" ") {
		t.Errorf("known_hosts %v %v: %q", err, fi.Mode(), data)
	}
	select {
	case <-returned:
		t.Fatal("returned before the build's context ended")
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	<-returned
}
