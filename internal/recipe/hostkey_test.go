package recipe

import (
	"bytes"
	"compress/gzip"
	"crypto/ed25519"
	"encoding/json"
	"encoding/pem"
	"io"
	"mime"
	"mime/multipart"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
)

// testHostKey is a fixed ed25519 key (from a fixed seed), so the golden
// files do not change from run to run.
func testHostKey(t *testing.T) HostKey {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	block, err := ssh.MarshalPrivateKey(priv, "grib-build-host-key")
	if err != nil {
		t.Fatal(err)
	}
	// MarshalPrivateKey draws the private section's two check words at
	// random: fix them for the golden files. They follow the magic, cipher
	// and KDF names ("none", "none"), the empty KDF options, the key count,
	// the public key (51 bytes) and the private section's length.
	check := len("openssh-key-v1\x00") + (4 + 4) + (4 + 4) + 4 + 4 + (4 + 51) + 4
	copy(block.Bytes[check:check+8], []byte{1, 2, 3, 4, 1, 2, 3, 4})
	if _, err := ssh.ParseRawPrivateKey(pem.EncodeToMemory(block)); err != nil {
		t.Fatalf("the fixed test key does not parse: %v", err)
	}
	pub, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	return HostKey{PrivateKeyPEM: pem.EncodeToMemory(block), PublicKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))}
}

func gzipped(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	_, _ = io.WriteString(w, s)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

const nestedMIME = "Content-Type: multipart/mixed; boundary=\"inner\"\nMIME-Version: 1.0\n\n" +
	"--inner\nContent-Type: text/x-shellscript\n\n#!/bin/sh\necho inner\n--inner--\n"

type hostKeyCase struct {
	name     string
	userData []byte
	golden   string // "": no golden file
	// the parts cloud-init sees after the host key part: content type and payload
	wantTypes    []string
	wantPayloads []string
}

func hostKeyCases(t *testing.T) []hostKeyCase {
	recipeScript, err := Render(params(config.ArchX64, config.BaseNoble, ""))
	if err != nil {
		t.Fatal(err)
	}
	cloudConfig := "#cloud-config\nruncmd:\n  - [sh, -c, 'echo ran > /var/lib/marker']\n"
	return []hostKeyCase{
		{"the built-in recipe", recipeScript, "noble-x64-host-key.mime", []string{"text/x-shellscript"}, []string{string(recipeScript)}},
		{"a cloud-config file", []byte(cloudConfig), "cloud-config-host-key.mime", []string{"text/cloud-config"}, []string{cloudConfig}},
		{"a MIME file of its own", []byte(nestedMIME), "nested-mime-host-key.mime", []string{"text/x-shellscript"}, []string{"#!/bin/sh\necho inner"}},
		{"a script that is not ASCII", []byte("#!/bin/sh\necho 'grüße'\n"), "", []string{"text/x-shellscript"}, []string{"#!/bin/sh\necho 'grüße'\n"}},
		{"a boothook", []byte("#cloud-boothook\n#!/bin/sh\ntrue\n"), "", []string{"text/cloud-boothook"}, []string{"#cloud-boothook\n#!/bin/sh\ntrue\n"}},
		{"gzip", gzipped(t, "#!/bin/sh\necho zipped\n"), "", []string{"application/x-gzip"}, []string{"#!/bin/sh\necho zipped\n"}},
		{"no user-data", nil, "", nil, nil},
	}
}

func TestWithHostKeyGolden(t *testing.T) {
	key := testHostKey(t)
	for _, tt := range hostKeyCases(t) {
		if tt.golden == "" {
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			got, err := WithHostKey(tt.userData, key)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", "golden", tt.golden)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the rendering (go test -update rewrites it)", path)
			}
		})
	}
}

// The message parses as MIME: the host key part first, with the key as
// cloud-init's ssh_keys, then the user-data unchanged with its own type.
func TestWithHostKeyParts(t *testing.T) {
	key := testHostKey(t)
	for _, tt := range hostKeyCases(t) {
		t.Run(tt.name, func(t *testing.T) {
			msg, err := WithHostKey(tt.userData, key)
			if err != nil {
				t.Fatal(err)
			}
			head, body, ok := bytes.Cut(msg, []byte("\r\n\r\n"))
			if !ok {
				t.Fatalf("no header: %q", msg)
			}
			ctype, params, err := mime.ParseMediaType(strings.TrimPrefix(strings.SplitN(string(head), "\r\n", 2)[0], "Content-Type: "))
			if err != nil || ctype != "multipart/mixed" {
				t.Fatalf("top content type %q: %v", ctype, err)
			}
			r := multipart.NewReader(bytes.NewReader(body), params["boundary"])
			var types []string
			var payloads [][]byte
			for {
				p, err := r.NextRawPart()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				data, _ := io.ReadAll(p)
				types = append(types, strings.SplitN(p.Header.Get("Content-Type"), ";", 2)[0])
				payloads = append(payloads, data)
			}
			if len(types) != 1+len(tt.wantTypes) || types[0] != "text/cloud-config" {
				t.Fatalf("parts %q, want the host key's text/cloud-config and %q", types, tt.wantTypes)
			}
			cfg := string(payloads[0])
			if !strings.HasPrefix(cfg, "#cloud-config\n") || !strings.Contains(cfg, "ed25519_public: \""+key.PublicKey+"\"") ||
				!strings.Contains(cfg, "    -----BEGIN OPENSSH PRIVATE KEY-----\n") {
				t.Errorf("host key part:\n%s", cfg)
			}
			if tt.golden == "noble-x64-host-key.mime" && !bytes.Equal(payloads[1], tt.userData) {
				t.Errorf("the recipe changed on its way through MIME")
			}
		})
	}
}

// cloud-init reads user-data with Python's email package: parsed the same
// way, every part's payload is the user-data given, with the type
// cloud-init's handlers expect, and the host key part is YAML holding the
// key. (Skipped without python3 and its yaml module.)
func TestWithHostKeyAsCloudInitReadsIt(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed")
	}
	const reader = `
import email, gzip, json, sys
msg = email.message_from_bytes(sys.stdin.buffer.read())
out = []
for part in msg.walk():
    if part.is_multipart():
        continue
    data = part.get_payload(decode=True)
    if part.get_content_type() == "application/x-gzip":
        data = gzip.decompress(data)
    out.append([part.get_content_type(), data.decode("utf-8")])
try:
    import yaml
    out.append(["yaml", yaml.safe_load(out[0][1])])
except ImportError:
    pass
json.dump(out, sys.stdout)
`
	key := testHostKey(t)
	for _, tt := range hostKeyCases(t) {
		t.Run(tt.name, func(t *testing.T) {
			msg, err := WithHostKey(tt.userData, key)
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("python3", "-c", reader)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
			cmd.Stdin = bytes.NewReader(msg)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("python3: %v", err)
			}
			var parts [][]any
			if err := json.Unmarshal(out, &parts); err != nil {
				t.Fatal(err)
			}
			if len(parts) > 0 && parts[len(parts)-1][0] == "yaml" {
				y, _ := parts[len(parts)-1][1].(map[string]any)
				keys, _ := y["ssh_keys"].(map[string]any)
				if keys["ed25519_private"] != string(key.PrivateKeyPEM) || keys["ed25519_public"] != key.PublicKey || y["ssh_deletekeys"] != true {
					t.Errorf("the host key part as YAML: %v", y)
				}
				parts = parts[:len(parts)-1]
			}
			if len(parts) != 1+len(tt.wantTypes) || parts[0][0] != "text/cloud-config" {
				t.Fatalf("parts %v", parts)
			}
			for i, want := range tt.wantTypes {
				if parts[i+1][0] != want || parts[i+1][1] != tt.wantPayloads[i] {
					t.Errorf("part %d: %q %q, want %q %q", i+1, parts[i+1][0], parts[i+1][1], want, tt.wantPayloads[i])
				}
			}
		})
	}
}

func TestWithHostKeyRefusesBadKeys(t *testing.T) {
	good := testHostKey(t)
	for name, k := range map[string]HostKey{
		"no public key":      {PrivateKeyPEM: good.PrivateKeyPEM},
		"an RSA public key":  {PrivateKeyPEM: good.PrivateKeyPEM, PublicKey: "ssh-rsa AAAAB3NzaC1yc2E="},
		"two lines":          {PrivateKeyPEM: good.PrivateKeyPEM, PublicKey: good.PublicKey + "\nruncmd: [reboot]"},
		"no private key":     {PublicKey: good.PublicKey},
		"not an OpenSSH key": {PrivateKeyPEM: []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), PublicKey: good.PublicKey},
		"YAML after the key": {PrivateKeyPEM: append(bytes.Clone(good.PrivateKeyPEM), "runcmd: [reboot]\n"...), PublicKey: good.PublicKey},
	} {
		if _, err := WithHostKey([]byte("#!/bin/sh\n"), k); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
