package config

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

func TestParseJumpHost(t *testing.T) {
	tests := []struct {
		in   string
		want JumpHost
		why  string // for a refusal: a part of the message
	}{
		{in: "ubuntu@bastion.internal", want: JumpHost{"ubuntu", "bastion.internal", 22}},
		{in: "ubuntu@bastion.internal:2222", want: JumpHost{"ubuntu", "bastion.internal", 2222}},
		{in: "ops_1@127.0.0.5:22", want: JumpHost{"ops_1", "127.0.0.5", 22}},
		{in: "root@[::1]:2200", want: JumpHost{"root", "::1", 2200}},
		{in: "root@[2001:db8::1]", want: JumpHost{"root", "2001:db8::1", 22}},
		{in: "a.b-c@host.", want: JumpHost{"a.b-c", "host.", 22}},
		{in: "", why: "empty"},
		{in: "bastion.internal", why: "the login user is missing"},
		{in: "@bastion", why: "the login user is missing"},
		{in: "ssh://u@h:22", why: "drop the scheme"},
		{in: "u@h1,u@h2", why: "only one jump host"},
		{in: "u@h1 -oProxyCommand=x", why: "spaces"},
		{in: "-oProxyCommand=x@h", why: "not a login name"},
		{in: ".u@h", why: "not a login name"},
		{in: "u:hunter2@h", why: "a password is not accepted"},
		{in: "u@v@h", why: "more than one @"},
		{in: "u@h:0", why: "from 1 to 65535"},
		{in: "u@h:65536", why: "from 1 to 65535"},
		{in: "u@h:022", why: "from 1 to 65535"},
		{in: "u@h:+22", why: "from 1 to 65535"},
		{in: "u@h:", why: "the port is empty"},
		{in: "u@:22", why: "the host is missing"},
		{in: "u@::1", why: "in brackets"},
		{in: "u@[::1", why: "unclosed"},
		{in: "u@[::1]x", why: "text after ]"},
		{in: "u@[::1]:", why: "the port is empty"},
		{in: "u@[127.0.0.1]", why: "IPv6"},
		{in: "u@[fe80::1%eth0]", why: "IPv6"},
		{in: "u@1.2.3", why: "not an IPv4 address"},
		{in: "u@127.000.0.1", why: "not an IPv4 address"},
		{in: "u@-host", why: "not a DNS name"},
		{in: "u@ho_st", why: "not a DNS name"},
		{in: "u@h..x", why: "not a DNS name"},
		{in: "u@h\x00", why: "control"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseJumpHost(tt.in)
			if tt.why == "" {
				if err != nil || got != tt.want {
					t.Fatalf("ParseJumpHost(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
				}
				return
			}
			var se *SettingError
			if err == nil || !errors.As(err, &se) || se.Setting != "ssh_jump" || !errs.Is(err, errs.KindUsage) {
				t.Fatalf("ParseJumpHost(%q) = %+v, %v; want a usage error of ssh_jump", tt.in, got, err)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.why) || !strings.HasPrefix(msg, "--ssh-jump ") {
				t.Errorf("message %q, want it to start with --ssh-jump and say %q", msg, tt.why)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the password is in the message %q", err.Error())
			}
		})
	}
}

// FuzzParseJumpHost: whatever the input, the parser either refuses it with
// one printable line that never holds a password, or returns a host that
// prints back to itself.
func FuzzParseJumpHost(f *testing.F) {
	for _, s := range []string{"ubuntu@bastion:2222", "u@[::1]:22", "u:pw@h", "u@h:0", "u@1.2.3.4", "@", "u@[", "a@b@c", "u@h.", "x@\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseJumpHost(s)
		if err != nil {
			msg := err.Error()
			if strings.ContainsFunc(msg, isControl) {
				t.Fatalf("message %q holds a control character", msg)
			}
			// A user:password@ never shows its password: only what follows the last @.
			const template = "--ssh-jump use user@host[:port], e.g. ubuntu@bastion.internal:2222 a password is not accepted (use --ssh-jump-key or the SSH agent) xxxxx"
			if user, _, ok := strings.Cut(s, "@"); ok {
				if _, pw, ok := strings.Cut(user, ":"); ok && len(pw) >= 6 && strings.Contains(msg, pw) &&
					!strings.Contains(s[strings.LastIndex(s, "@")+1:], pw) && !strings.Contains(template, pw) {
					t.Fatalf("message %q shows the password %q", msg, pw)
				}
			}
			return
		}
		if h.User == "" || h.Host == "" || h.Port < 1 || h.Port > 65535 {
			t.Fatalf("ParseJumpHost(%q) = %+v", s, h)
		}
		back, err := ParseJumpHost(h.String())
		if err != nil || back != h {
			t.Fatalf("ParseJumpHost(%q) = %+v, printed %q parses to %+v, %v", s, h, h.String(), back, err)
		}
		if strings.ContainsAny(h.Host, "@,[] ") || strings.ContainsAny(h.User, "@:,") {
			t.Fatalf("ParseJumpHost(%q) = %+v", s, h)
		}
	})
}

// jumpFiles writes a private key (mode 0600) and a known_hosts line for
// host; it returns their paths.
func jumpFiles(t *testing.T, host string) (key, knownHosts string) {
	t.Helper()
	dir := t.TempDir()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	key = filepath.Join(dir, "id")
	if err := os.WriteFile(key, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostSigner, _ := ssh.NewSignerFromKey(hostPriv)
	knownHosts = filepath.Join(dir, "known_hosts")
	line := host + " " + string(ssh.MarshalAuthorizedKey(hostSigner.PublicKey()))
	if err := os.WriteFile(knownHosts, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	return key, knownHosts
}

func TestValidateSSHJump(t *testing.T) {
	key, kh := jumpFiles(t, "[127.0.0.9]:2222")
	dir := t.TempDir()
	loose := filepath.Join(dir, "loose")
	data, _ := os.ReadFile(key)
	if err := os.WriteFile(loose, data, 0o640); err != nil {
		t.Fatal(err)
	}
	notKey := filepath.Join(dir, "notkey")
	if err := os.WriteFile(notKey, []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-ish\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, _ := ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("pass"))
	withPass := filepath.Join(dir, "withpass")
	if err := os.WriteFile(withPass, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	badKH := filepath.Join(dir, "bad_known_hosts")
	if err := os.WriteFile(badKH, []byte("[127.0.0.9]:2222 ssh-ed25519 !!!notbase64\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	jump := "ops@127.0.0.9:2222"
	tests := []struct {
		name    string
		j       SSHJump
		setting string // "" accepted
		why     string
	}{
		{"none", SSHJump{}, "", ""},
		{"key file", SSHJump{Host: jump, Key: key, KnownHosts: kh}, "", ""},
		{"agent", SSHJump{Host: jump, KnownHosts: kh}, "", ""},
		{"no known hosts", SSHJump{Host: jump, Key: key}, "ssh_jump_known_hosts", "required with --ssh-jump"},
		{"host not in known hosts", SSHJump{Host: "ops@127.0.0.9", KnownHosts: kh}, "ssh_jump_known_hosts", "no key for 127.0.0.9 in it"},
		{"known hosts missing", SSHJump{Host: jump, KnownHosts: filepath.Join(dir, "nope")}, "ssh_jump_known_hosts", "no such file"},
		{"known hosts bad", SSHJump{Host: jump, KnownHosts: badKH}, "ssh_jump_known_hosts", "not a known_hosts file"},
		{"key loose", SSHJump{Host: jump, Key: loose, KnownHosts: kh}, "ssh_jump_key", "has mode 0640: others may read the private key; chmod 600 it"},
		{"key not a key", SSHJump{Host: jump, Key: notKey, KnownHosts: kh}, "ssh_jump_key", "not an OpenSSH or PEM private key"},
		{"key passphrase", SSHJump{Host: jump, Key: withPass, KnownHosts: kh}, "ssh_jump_key", "add it to the SSH agent"},
		{"key missing", SSHJump{Host: jump, Key: filepath.Join(dir, "nope"), KnownHosts: kh}, "ssh_jump_key", "no such file"},
		{"key directory", SSHJump{Host: jump, Key: dir, KnownHosts: kh}, "ssh_jump_key", "not a regular file"},
		{"key without jump", SSHJump{Key: key}, "ssh_jump_key", "applies only with --ssh-jump"},
		{"known hosts without jump", SSHJump{KnownHosts: kh}, "ssh_jump_known_hosts", "applies only with --ssh-jump"},
		{"bad jump", SSHJump{Host: "bastion", KnownHosts: kh}, "ssh_jump", "the login user is missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateSSHJump(tt.j)
			if tt.setting == "" {
				if err != nil {
					t.Fatalf("ValidateSSHJump: %v", err)
				}
				return
			}
			var se *SettingError
			if !errors.As(err, &se) || se.Setting != tt.setting || !strings.Contains(err.Error(), tt.why) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("ValidateSSHJump: %v, want one line refusing %s with %q", err, tt.setting, tt.why)
			}
			if strings.Contains(err.Error(), "secret-ish") {
				t.Errorf("the key file's content is in %q", err.Error())
			}
		})
	}
}
