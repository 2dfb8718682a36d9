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

// FuzzHostKeysFromConsole: every fingerprint accepted is on the console,
// inside the last complete block: a whole field of a line of the last
// complete fingerprints block, or the fingerprint of a public key on a line
// of the last complete keys block. Nothing outside the blocks, in a block
// still being written or in an older one, and no part of a longer token.
func FuzzHostKeysFromConsole(f *testing.F) {
	f.Add(readConsoleSample(f))
	f.Add("")
	f.Add(fingerprintsBegin + "\n256 " + sampleED25519 + " x (ED25519)\n" + fingerprintsEnd)
	f.Add(keysBegin + "\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDiqYXry4co5jAt7Lg5xu53OguW+dr2WxUjFEBABQzui r@h\n" + keysEnd)
	// Near misses that a looser parser would accept.
	f.Add("256 " + sampleRSA + " r@h (RSA)\n" + fingerprintsBegin + "\n256 " + sampleED25519 + " x (ED25519)\n" + fingerprintsEnd)
	f.Add(fingerprintsBegin + "\n256 " + sampleED25519 + " x (ED25519)\n" + fingerprintsEnd + "\n" + fingerprintsBegin + "\n256 " + sampleRSA + " x (RSA)\n")
	f.Add(fingerprintsBegin + "\n256 " + sampleED25519 + "Q x (ED25519)\n" + fingerprintsEnd)
	f.Add(fingerprintsBegin + "\n256 " + sampleRSA + " x (RSA)\n" + fingerprintsBegin + "\n256 " + sampleED25519 + " x (ED25519)\n" + fingerprintsEnd)
	f.Add(fingerprintsBegin + "\n256 " + sampleED25519 + " x (ED25519) " + fingerprintsEnd + "\n256 " + sampleRSA + " x (RSA)\n" + fingerprintsEnd)
	f.Add(fingerprintsBegin + "\n256 " + sampleRSA + " x (RSA)\n" + fingerprintsEnd + "\n" + fingerprintsBegin + "\n256 " + sampleED25519 + " x (ED25519)\n" + fingerprintsEnd)
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
		onConsole := consoleFingerprints(console)
		seen := map[string]bool{}
		for _, fp := range got {
			if !wellFormedFingerprint.MatchString(fp) {
				t.Fatalf("malformed fingerprint %q", fp)
			}
			if !onConsole[fp] {
				t.Fatalf("accepted %q, which is not in the console's last complete host key block", fp)
			}
			if seen[fp] {
				t.Fatalf("duplicate fingerprint %q", fp)
			}
			seen[fp] = true
		}
	})
}

// consoleFingerprints is the fuzz test's own reading of what the console
// vouches for: each whole field of the lines of the last complete
// fingerprints block, and the SHA-256 fingerprint of each public key that a
// line of the last complete keys block holds, from any of its fields on.
func consoleFingerprints(console string) map[string]bool {
	lines := strings.Split(console, "\n")
	out := map[string]bool{}
	for _, line := range lastCompleteBlock(lines, fingerprintsBegin, fingerprintsEnd) {
		for _, f := range strings.Fields(line) {
			out[f] = true
		}
	}
	for _, line := range lastCompleteBlock(lines, keysBegin, keysEnd) {
		fields := strings.Fields(line)
		for i := range fields {
			if pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(strings.Join(fields[i:], " "))); err == nil {
				out[ssh.FingerprintSHA256(pub)] = true
			}
		}
	}
	return out
}

// lastCompleteBlock finds, from the end, the last line k with the end marker
// (and not the begin marker, which would open a block instead) whose nearest
// line j above with a marker has the begin marker, and returns the lines
// strictly between j and k.
func lastCompleteBlock(lines []string, begin, end string) []string {
	for k := len(lines) - 1; k >= 0; k-- {
		if !strings.Contains(lines[k], end) || strings.Contains(lines[k], begin) {
			continue
		}
		for j := k - 1; j >= 0; j-- {
			if strings.Contains(lines[j], begin) {
				return lines[j+1 : k]
			}
			if strings.Contains(lines[j], end) {
				break
			}
		}
	}
	return nil
}
