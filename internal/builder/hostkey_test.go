package builder

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/provision"
	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// recordingHostKeys is a hostKeySource that remembers the keys it made.
type recordingHostKeys struct{ keys []provision.BuildHostKey }

func (r *recordingHostKeys) make() (provision.BuildHostKey, error) {
	k, err := provision.NewBuildHostKey(rand.Reader)
	r.keys = append(r.keys, k)
	return k, err
}

// privateKeyLines are the base64 lines of k's private key file that hold
// the private key: from the fourth on (each encoding draws new check words,
// which the third line holds; the first two are the public key).
func privateKeyLines(t *testing.T, k provision.BuildHostKey) []string {
	t.Helper()
	pem, err := k.PrivateKeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for line := range strings.Lines(string(pem)) {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "-----") {
			out = append(out, line)
		}
	}
	if len(out) < 5 {
		t.Fatalf("the private key file has %d lines", len(out))
	}
	return out[3:]
}

// The openstack builder boots its server with the job's user-data plus a
// host key made for this build alone, and logs only the key's fingerprint.
func TestOpenStackUserDataCarriesTheBuildsHostKey(t *testing.T) {
	build := newFakeCloud("build")
	storeBase(build, "p")
	o := testOpenStack(t, build)
	o.withoutGuest = true // the fake server has no guest
	keys := &recordingHostKeys{}
	o.hostKeys = keys.make
	const recipe = "#cloud-config\nruncmd: [[sh, -c, 'echo recipe-ran']]\n"
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	for range 2 {
		if _, err := o.Build(context.Background(), log, testJob(t, testSpec(t, nil), []byte(recipe))); err != nil {
			t.Fatal(err)
		}
	}
	if len(keys.keys) != 2 || len(build.userData) != 2 || keys.keys[0].Fingerprint() == keys.keys[1].Fingerprint() {
		t.Fatalf("%d keys for %d servers, want one new key per build", len(keys.keys), len(build.userData))
	}
	var uds []string
	for _, ud := range build.userData {
		uds = append(uds, string(ud))
	}
	for i, k := range keys.keys {
		ud := uds[0]
		if !strings.Contains(ud, k.AuthorizedKey()) {
			ud = uds[1]
		}
		if !strings.HasPrefix(ud, "Content-Type: multipart/mixed") || !strings.Contains(ud, "ed25519_public: \""+k.AuthorizedKey()+"\"") ||
			!strings.Contains(ud, recipe) {
			t.Errorf("build %d booted with user-data lacking its key or the recipe:\n%s", i, ud)
		}
		for _, line := range privateKeyLines(t, k) {
			if !strings.Contains(ud, line) {
				t.Errorf("build %d: the private key is not in the user-data", i)
			}
			if strings.Contains(logs.String(), line) {
				t.Errorf("build %d: a line of the private host key is in the log", i)
			}
		}
		if !strings.Contains(logs.String(), "host_key="+k.Fingerprint()) {
			t.Errorf("build %d: the log does not name the key's fingerprint", i)
		}
	}
}

// sshStep is the guest steps' "ssh" alone, for cfg.
func sshStep(cfg GuestConfig) []Step {
	for _, s := range GuestSteps(cfg) {
		if s.Name == "ssh" {
			return []Step{s}
		}
	}
	return nil
}

// The "ssh" step accepts the guest only with the host key it was given,
// and says which key it pinned; another key fails at once (a possible
// interception, never retried), and no key at all is a bug.
func TestGuestSSHPinsTheGeneratedKey(t *testing.T) {
	guest := testenv.StartShellGuest(t)
	signer, err := ssh.NewSignerFromKey(mustEd25519(t))
	if err != nil {
		t.Fatal(err)
	}
	other, err := provision.NewBuildHostKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name     string
		hostKey  ssh.PublicKey
		insecure bool
		kind     errs.Kind // KindInternal with want "": success
		want     string
	}{
		{"the guest's key", guest.HostKey.PublicKey(), false, errs.KindInternal, ""},
		{"another key", other.PublicKey(), false, errs.KindBuild, "not the host key " + other.Fingerprint() + " this build generated"},
		{"no key", nil, false, errs.KindInternal, "no generated SSH host key"},
		{"no key, unchecked", nil, true, errs.KindInternal, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			cfg := GuestConfig{
				Address: func(context.Context) (string, error) { return guest.Addr, nil },
				Signer:  signer, HostKey: tt.hostKey, InsecureSkipHostKeyCheck: tt.insecure,
				Timeouts: config.Timeouts{SSH: 20 * time.Second, CloudInit: time.Hour},
				Log:      slog.New(slog.NewTextHandler(&logs, nil)),
			}
			steps := sshStep(cfg)
			if len(steps) != 1 || steps[0].Timeout != cfg.Timeouts.SSH || steps[0].TimeoutFlag != "--ssh-timeout" {
				t.Fatalf("ssh step %+v: want --ssh-timeout's deadline alone", steps)
			}
			start := time.Now()
			err := (&Runner{}).Run(context.Background(), steps)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(logs.String(), "host_key="+ssh.FingerprintSHA256(guest.HostKey.PublicKey())) {
					t.Errorf("the log does not name the pinned key:\n%s", logs.String())
				}
				return
			}
			if errs.KindOf(err) != tt.kind || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v (kind %v), want %v with %q", err, errs.KindOf(err), tt.kind, tt.want)
			}
			if tt.kind == errs.KindBuild && (!errors.Is(err, provision.ErrHostKeyMismatch) || time.Since(start) > 10*time.Second) {
				t.Errorf("a wrong host key was not refused at once: %v after %s", err, time.Since(start))
			}
		})
	}
}

// On a cloud that forbids reading the console the build goes on: "ssh"
// logs the note once the guest answers, and a failure carries the note
// instead of a console tail.
func TestConsoleForbidden(t *testing.T) {
	guest := testenv.StartShellGuest(t)
	signer, err := ssh.NewSignerFromKey(mustEd25519(t))
	if err != nil {
		t.Fatal(err)
	}
	forbidden := func(context.Context) (string, error) {
		return "", fmt.Errorf("%w (HTTP 403 for server x): policy does not allow os_compute_api:os-console-output", ErrConsoleForbidden)
	}
	var logs bytes.Buffer
	cfg := GuestConfig{
		Address: func(context.Context) (string, error) { return guest.Addr, nil },
		Signer:  signer, HostKey: guest.HostKey.PublicKey(), Console: forbidden,
		Timeouts: config.Timeouts{SSH: 20 * time.Second},
		Log:      slog.New(slog.NewTextHandler(&logs, nil)),
	}
	if err := (&Runner{}).Run(context.Background(), sshStep(cfg)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "level=WARN msg=\""+consoleForbiddenNote+"\"") {
		t.Errorf("no note in the log:\n%s", logs.String())
	}

	logs.Reset()
	err = decorateGuestError(context.Background(), cfg, &GuestSession{}, nil, errs.New(errs.KindBuild, "cloud-init failed"))
	var gf *GuestFailure
	if !errors.As(err, &gf) || gf.Console != "" || gf.ConsoleNote != consoleForbiddenNote || errs.KindOf(err) != errs.KindBuild {
		t.Fatalf("err = %#v", err)
	}
	if msg := err.Error(); !strings.Contains(msg, consoleForbiddenNote) || strings.Contains(msg, "last lines of the console") ||
		strings.Contains(msg, "could not read the console") {
		t.Errorf("error %q: want the note and no console tail", msg)
	}
	if l := logs.String(); !strings.Contains(l, "console_note=") || strings.Contains(l, "console_tail=") {
		t.Errorf("log %q: want the note and no console tail", l)
	}
}

func mustEd25519(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

// A --user-data that fits alone but not with the host key part is refused
// before any server exists, naming the flag (exit 2).
func TestOpenStackUserDataTooLargeWithTheHostKey(t *testing.T) {
	build := newFakeCloud("build")
	storeBase(build, "p")
	o := testOpenStack(t, build)
	o.withoutGuest = true
	big := append([]byte("#!/bin/sh\n"), bytes.Repeat([]byte("#"), 49000)...)
	_, err := o.Build(context.Background(), nil, testJob(t, testSpec(t, nil), big))
	if errs.ExitCode(err) != 2 || !strings.Contains(err.Error(), "shorten --user-data") {
		t.Fatalf("err = %v, want exit 2 saying to shorten --user-data", err)
	}
	if len(build.userData) != 0 {
		t.Errorf("a server was created")
	}
	if _, err := o.Build(context.Background(), nil, testJob(t, testSpec(t, nil), big[:47000])); err != nil {
		t.Errorf("47000 bytes of user-data: %v", err)
	}
}
