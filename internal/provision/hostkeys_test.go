package provision

import (
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// The fingerprints of the keys in testdata/console-ubuntu.txt, as
// `ssh-keygen -l` printed them.
const (
	sampleECDSA   = "SHA256:mlLZ7HIPYguCzgn1Im1gp8P1HDn+b/WPCr89M7VSUnc"
	sampleED25519 = "SHA256:L3X3Rh9S4MP6DNBi8pdHQw9vwejftucB0xrr4I2v19Y"
	sampleRSA     = "SHA256:dwr35kR3y8+LIWCKr/VK15bJYGu7a3h60Y/sc2CF4Vk"
)

func readConsoleSample(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("testdata/console-ubuntu.txt")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHostKeysFromConsole(t *testing.T) {
	sample := readConsoleSample(t)
	block := func(lines ...string) string {
		return "boot...\n" + fingerprintsBegin + "\n" + strings.Join(lines, "\n") + "\n" + fingerprintsEnd + "\nlogin:\n"
	}
	tests := []struct {
		name    string
		console string
		want    []string // nil: expect ErrNoHostKeys
	}{
		{"real Ubuntu console", sample, []string{sampleECDSA, sampleED25519, sampleRSA}},
		{"serial console with CRLF", strings.ReplaceAll(sample, "\n", "\r\n"), []string{sampleECDSA, sampleED25519, sampleRSA}},
		{"keys block only", keysOnly(sample), []string{sampleECDSA, sampleED25519}},
		{"no logger prefix", block("256 " + sampleED25519 + " root@h (ED25519)"), []string{sampleED25519}},
		{"no comment", block("256 " + sampleED25519 + " no comment (ED25519)"), []string{sampleED25519}},
		{"kernel message inside the block", block("[   14.1] random: crng init done", "256 "+sampleED25519+" root@h (ED25519)"), []string{sampleED25519}},
		{"last boot wins", block("256 "+sampleRSA+" root@h (RSA)") + block("256 "+sampleED25519+" root@h (ED25519)"), []string{sampleED25519}},
		{"empty console", "", nil},
		{"only whitespace", " \n\r\n", nil},
		{"no block yet", "[    0.0] Linux version 6.8.0\n", nil},
		{"block still being written", "x\n" + fingerprintsBegin + "\n256 " + sampleED25519 + " root@h (ED25519)\n", nil},
		{"MD5 fingerprints only", block("2048 12:f8:7e:78:61:b4:bf:e2:de:24:15:96:4e:d4:72:53 root@h (RSA)"), nil},
		{"truncated fingerprint", block("256 SHA256:L3X3Rh9S4MP6DNBi8pdHQw9 root@h (ED25519)"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := HostKeysFromConsole(tt.console)
			if tt.want == nil {
				if !errors.Is(err, ErrNoHostKeys) {
					t.Fatalf("got %v, %v; want an error wrapping ErrNoHostKeys", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v\nwant %v", got, tt.want)
			}
		})
	}
}

// keysOnly removes the fingerprints block, leaving the keys block.
func keysOnly(console string) string {
	i := strings.Index(console, fingerprintsBegin)
	j := strings.Index(console, fingerprintsEnd)
	return console[:i] + console[j+len(fingerprintsEnd):]
}

func TestHostKeyAlgorithmsFollowTheConsole(t *testing.T) {
	keys, err := parseConsoleHostKeys(readConsoleSample(t))
	if err != nil {
		t.Fatal(err)
	}
	got := newAcceptedKeys(keys).algos
	want := []string{ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}
	if !slices.Equal(got, want) {
		t.Errorf("algorithms %v, want %v", got, want)
	}
	// A fingerprint without a key type must not restrict the algorithms.
	if a := newAcceptedKeys([]hostKey{{fingerprint: sampleED25519}}); a.algos != nil {
		t.Errorf("unknown type: algorithms %v, want nil", a.algos)
	}
}

var wellFormedFingerprint = regexp.MustCompile(`^SHA256:[A-Za-z0-9+/]{43}$`)

func FuzzHostKeysFromConsole(f *testing.F) {
	f.Add(readConsoleSample(f))
	f.Add("")
	f.Add(fingerprintsBegin + "\n256 " + sampleED25519 + " x (ED25519)\n" + fingerprintsEnd)
	f.Add(keysBegin + "\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDiqYXry4co5jAt7Lg5xu53OguW+dr2WxUjFEBABQzui r@h\n" + keysEnd)
	f.Fuzz(func(t *testing.T, console string) {
		got, err := HostKeysFromConsole(console)
		if err != nil {
			if !errors.Is(err, ErrNoHostKeys) {
				t.Fatalf("error %v does not wrap ErrNoHostKeys", err)
			}
			return
		}
		if len(got) == 0 {
			t.Fatal("no fingerprints and no error")
		}
		seen := map[string]bool{}
		for _, fp := range got {
			if !wellFormedFingerprint.MatchString(fp) {
				t.Fatalf("malformed fingerprint %q", fp)
			}
			if seen[fp] {
				t.Fatalf("duplicate fingerprint %q", fp)
			}
			seen[fp] = true
		}
	})
}
