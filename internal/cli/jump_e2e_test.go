package cli

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/runner-image-builder/github-runner-image-builder/internal/build"
	"github.com/runner-image-builder/github-runner-image-builder/internal/builder"
	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// jumpGuestBuild runs the real guest steps up to verify (clean and
// power-off would act on this host: the ShellGuest runs commands here) on a
// testenv.ShellGuest, through the job's --ssh-jump as the builders make it
// (builder.SSHJump), with the host key checked against the console.
type jumpGuestBuild struct {
	guest  *testenv.ShellGuest
	signer ssh.Signer
	getenv func(string) string
}

func (b jumpGuestBuild) Build(ctx context.Context, log *slog.Logger, job builder.Job) ([]config.PublishedImage, error) {
	jump, err := builder.SSHJump(job.Spec.SSHJump, b.getenv, log)
	if err != nil {
		return nil, err
	}
	steps := slices.DeleteFunc(builder.GuestSteps(builder.GuestConfig{
		Address: func(context.Context) (string, error) { return b.guest.Addr, nil },
		Signer:  b.signer,
		HostKey: b.guest.HostKey.PublicKey(), // as a build pins the key it generated
		Console: func(context.Context) (string, error) { return b.guest.Console(), nil },
		Jump:    jump,
		Script:  job.Script, Secrets: job.Spec.Secrets, Checks: job.Checks,
		Timeouts: job.Spec.Timeouts, Log: log,
	}), func(s builder.Step) bool { return s.Name == "clean" || s.Name == "power-off" })
	r := builder.Runner{Log: log}
	if err := r.Run(ctx, steps); err != nil {
		return nil, err
	}
	var out []config.PublishedImage
	for _, c := range job.Spec.PublishClouds() {
		out = append(out, config.PublishedImage{Cloud: c, ID: "img-1", Name: job.Spec.ImageName})
	}
	return out, nil
}

// serveAgent serves an SSH agent holding key on a socket in a temporary
// directory until the test ends; it returns the socket's path.
func serveAgent(t *testing.T, keyFile string) string {
	t.Helper()
	data, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ssh.ParseRawPrivateKey(data)
	if err != nil {
		t.Fatal(err)
	}
	keyring := agent.NewKeyring()
	if err := keyring.Add(agent.AddedKey{PrivateKey: raw}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { _ = agent.ServeAgent(keyring, c); _ = c.Close() }()
		}
	}()
	return sock
}

// The builder's SSH through a real OpenSSH jump host to a ShellGuest, by
// `run --ssh-jump`: with the key file and with the SSH agent, the script
// runs (with its secret on stdin) and the jump host's log shows the
// channel it forwarded to the guest. A known_hosts whose key is not the
// jump host's ends the run at once with one Error line and exit 4, opens
// no session on the guest, and leaves no connection to the jump host.
func TestRunThroughJumpHost(t *testing.T) {
	jump := testenv.StartJumpHost(t)
	guest := testenv.StartShellGuest(t)
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	// cloud-init's host key block, for the console host key check.
	console := "-----BEGIN SSH HOST KEY KEYS-----\n" + string(ssh.MarshalAuthorizedKey(guest.HostKey.PublicKey())) + "-----END SSH HOST KEY KEYS-----\n"
	if err := os.WriteFile(filepath.Join(guest.Dir, "console"), []byte(console), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "#!/bin/sh\nset -eu\nprintf '%s' \"$TOKEN\" > stored\necho ran >> script-runs\n")
	}))
	defer srv.Close()
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	userData := write("user-data", "#cloud-config\n")
	verify := write("verify.sh", "#!/bin/sh\ntest -s stored\n")
	otherHost, _ := testenv.NewEd25519(t, "")
	wrongKnownHosts := write("wrong_known_hosts", testenv.KnownHostsLine(jump.Addr, otherHost.PublicKey()))
	agentSock := serveAgent(t, jump.KeyFile)
	_, strangerPEM := testenv.NewEd25519(t, "")
	strangerKey := write("stranger_ed25519", string(strangerPEM))
	// A jump host whose address nobody listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := l.Addr().String()
	_ = l.Close()
	deadJump := jump.User + "@" + deadAddr
	deadKnownHosts := write("dead_known_hosts", testenv.KnownHostsLine(deadAddr, jump.HostKey.PublicKey()))
	secret := fmt.Sprintf("grib-jump-%x", priv.Seed()[:10])

	tests := []struct {
		name       string
		key        string // --ssh-jump-key, or ""
		agent      string // SSH_AUTH_SOCK, or ""
		knownHosts string
		jump       string // --ssh-jump, "" for the jump host's
		timeout    string // --ssh-timeout, "" for 1m
		code       int
		errLine    []string // parts of the Error line
	}{
		{name: "key file", key: jump.KeyFile, knownHosts: jump.KnownHostsFile},
		{name: "agent", agent: agentSock, knownHosts: jump.KnownHostsFile},
		{name: "key refused", key: strangerKey, knownHosts: jump.KnownHostsFile, code: 4,
			errLine: []string{"the jump host " + jump.Addr + " refused the login of " + jump.User + " with the --ssh-jump-key key SHA256:"}},
		{name: "no key and no agent", knownHosts: jump.KnownHostsFile, code: 2,
			errLine: []string{"no key for the jump host: give --ssh-jump-key, or run an SSH agent holding it (SSH_AUTH_SOCK is unset)"}},
		{name: "jump host down", key: jump.KeyFile, knownHosts: deadKnownHosts, jump: deadJump, timeout: "3s", code: 6,
			errLine: []string{"exceeded its deadline of 3s (raise it with --ssh-timeout)", "no SSH connection to " + guest.Addr,
				"jump host " + deadAddr + ": dial tcp " + deadAddr + ": connect: connection refused"}},
		{name: "wrong jump host key", key: jump.KeyFile, knownHosts: wrongKnownHosts, code: 4,
			errLine: []string{"SSH to " + guest.Addr + " through the jump host", "the jump host " + jump.Addr + " presented host key", "which is not the one " + wrongKnownHosts + " line 1 lists for it"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runs := filepath.Join(guest.Dir, "script-runs")
			_ = os.Remove(runs)
			logBefore := len(jump.Log())
			env := testEnv(config.SecretEnvPrefix + "TOKEN=" + secret)
			getenv := config.Getenv(env)
			jumpArg, timeout := cmp.Or(tt.jump, jump.Jump()), cmp.Or(tt.timeout, "1m")
			args := pinned("--os-cloud", "builder", "run", "grib-noble-x64", "--arch", "x64",
				"--user-data", userData, "--skip-default-checks", "--verify-script", verify, "--script-url", srv.URL+"/s.sh",
				"--ssh-timeout", timeout, "--cloud-init-timeout", "1m",
				"--ssh-jump", jumpArg, "--ssh-jump-known-hosts", tt.knownHosts)
			if tt.key != "" {
				args = append(args, "--ssh-jump-key", tt.key)
			}
			if tt.agent != "" {
				getenv = config.Getenv(append(env, "SSH_AUTH_SOCK="+tt.agent))
			}
			backend := Backend{Builds: &build.Builds{OpenStack: jumpGuestBuild{guest, signer, getenv}, HTTP: srv.Client()}}
			start := time.Now()
			r := runApp(t, env, backend, append(args, "--log-level", "debug")...)
			sshdLog := jump.Log()[logBefore:]
			if r.code != tt.code {
				t.Fatalf("exit %d, want %d\nstderr:\n%s\n--- sshd log\n%s", r.code, tt.code, r.stderr, sshdLog)
			}
			for _, form := range testenv.SecretForms(secret) {
				if strings.Contains(r.stderr, form) || strings.Contains(sshdLog, form) {
					t.Errorf("the secret (as %q) is in the log or the jump host's log", form)
				}
			}
			key, _ := os.ReadFile(jump.KeyFile)
			if strings.Contains(r.stderr, strings.TrimSpace(string(key))) {
				t.Error("the jump key is in the log")
			}
			if tt.code == 0 {
				if stored, err := os.ReadFile(filepath.Join(guest.Dir, "stored")); err != nil || string(stored) != secret {
					t.Errorf("the script did not store the secret: %q, %v", stored, err)
				}
				if !strings.Contains(sshdLog, "Accepted publickey for "+jump.User) || !testenv.ForwardedTo(sshdLog, guest.Addr) {
					t.Errorf("the jump host's log shows no login and no channel forwarded to %s:\n%s", guest.Addr, sshdLog)
				}
				if !strings.Contains(r.stderr, "SSH to the guest goes through a jump host") {
					t.Errorf("the log does not say the SSH goes through the jump host:\n%s", r.stderr)
				}
				return
			}
			lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
			last := lines[len(lines)-1]
			if !strings.HasPrefix(last, "Error: ") || r.stdout != "" {
				t.Fatalf("stdout %q, last stderr line %q: want nothing and an Error line", r.stdout, last)
			}
			for _, part := range tt.errLine {
				if !strings.Contains(last, part) {
					t.Errorf("Error line %q does not say %q", last, part)
				}
			}
			if n := strings.Count(r.stderr, "Error: "); n != 1 {
				t.Errorf("%d Error lines, want 1:\n%s", n, r.stderr)
			}
			if time.Since(start) > 30*time.Second {
				t.Errorf("the refused jump host took %s to fail: it must not be retried until the SSH deadline", time.Since(start))
			}
			if _, err := os.Stat(runs); err == nil {
				t.Error("the script ran although the jump host was refused")
			}
			t.Logf("the refusal: %s", last)
			if strings.Contains(sshdLog, "Accepted publickey") {
				t.Errorf("the builder logged in to the jump host:\n%s", sshdLog)
			}
			// Nothing left: no connection to the jump host stays open.
			deadline := time.Now().Add(5 * time.Second)
			for {
				n, err := testenv.EstablishedTo(jump.Addr)
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d connections to the jump host %s are still open", n, jump.Addr)
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}
