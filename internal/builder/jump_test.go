package builder

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// Both builders read --ssh-jump in "prepare" (before anything is made)
// and hand it to their guest steps; without a key and an agent, prepare
// fails with a usage error.
func TestPrepareReadsTheJumpHost(t *testing.T) {
	dir := t.TempDir()
	signer, keyPEM := testenv.NewEd25519(t, "")
	keyFile, knownHosts := filepath.Join(dir, "id"), filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(knownHosts, []byte("[127.0.0.9]:2222 "+string(ssh.MarshalAuthorizedKey(signer.PublicKey()))), 0o600); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"XDG_STATE_HOME": filepath.Join(dir, "state"), "HOME": dir}
	getenv := func(k string) string { return vars[k] }
	type build struct {
		prepare func(context.Context) error
		guest   func() GuestConfig
	}
	builds := map[string]func(config.RunSpec) build{
		"openstack": func(spec config.RunSpec) build {
			b := &osBuild{o: &OpenStack{Getenv: getenv}, spec: spec, log: discard()}
			return build{b.prepare, func() GuestConfig { return b.withKey(GuestConfig{}) }}
		},
		"local": func(spec config.RunSpec) build {
			b := &localBuild{l: &Local{OpenStack: &OpenStack{Getenv: getenv}}, spec: spec, log: discard(), output: filepath.Join(dir, "out.qcow2")}
			return build{b.prepare, func() GuestConfig { return b.withKey(GuestConfig{}) }}
		},
	}
	for name, mk := range builds {
		t.Run(name, func(t *testing.T) {
			for _, tc := range []struct {
				name  string
				jump  config.SSHJump
				agent string
				want  string // the Jump's Addr, or "" for none
				fails bool
			}{
				{name: "direct"},
				{name: "key", jump: config.SSHJump{Host: "ops@127.0.0.9:2222", Key: keyFile, KnownHosts: knownHosts}, want: "127.0.0.9:2222"},
				{name: "agent", jump: config.SSHJump{Host: "ops@127.0.0.9:2222", KnownHosts: knownHosts}, agent: "/run/agent.sock", want: "127.0.0.9:2222"},
				{name: "no key, no agent", jump: config.SSHJump{Host: "ops@127.0.0.9:2222", KnownHosts: knownHosts}, fails: true},
			} {
				t.Run(tc.name, func(t *testing.T) {
					vars["SSH_AUTH_SOCK"] = tc.agent
					spec := testSpec(t, func(s *config.RunSpec) { s.SSHJump = tc.jump })
					b := mk(spec)
					err := b.prepare(t.Context())
					if tc.fails {
						if !errs.Is(err, errs.KindUsage) {
							t.Fatalf("prepare: %v, want a usage error", err)
						}
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					j := b.guest().Jump
					switch {
					case tc.want == "" && j != nil:
						t.Errorf("a jump host %s without --ssh-jump", j.Addr)
					case tc.want != "" && (j == nil || j.Addr != tc.want || j.User != "ops" || j.HostKeyCallback == nil || len(j.HostKeys) != 1):
						t.Errorf("the guest steps' jump host is %+v, want ops@%s with its known key", j, tc.want)
					case tc.want != "" && (j.Signer == nil) != (tc.agent != ""):
						t.Errorf("signer %v, agent socket %q: want the key file's key, or the agent", j.Signer, j.AgentSocket)
					}
				})
			}
		})
	}
}
