package testenv

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"golang.org/x/crypto/ssh"
)

func TestRequirement(t *testing.T) {
	dir := t.TempDir()
	present := filepath.Join(dir, "clouds.yaml")
	if err := os.WriteFile(present, []byte("clouds: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "absent.yaml")
	tests := []struct {
		name     string
		enabled  bool
		file     string
		wantSkip bool
		wantErr  bool
	}{
		{"off skips even with a stack", false, present, true, false},
		{"off skips without a stack", false, missing, true, false},
		{"on with the clouds file runs", true, present, false, false},
		{"on without the clouds file fails", true, missing, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			skip, err := requirement(tt.enabled, tt.file)
			if (skip != "") != tt.wantSkip {
				t.Errorf("skip = %q, want skip %v", skip, tt.wantSkip)
			}
			if (err != nil) != tt.wantErr {
				t.Errorf("err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "openstack-up.sh") {
				t.Errorf("error %q does not say how to start the stack", err)
			}
		})
	}
}

func TestPathsFromEnvironment(t *testing.T) {
	tests := []struct {
		name                    string
		clouds, image, imageDir string
		wantClouds, wantImage   string
	}{
		{"defaults", "", "", "", DefaultCloudsFile, filepath.Join(DefaultImageDir, testImageName)},
		{"image dir", "", "", "/x", DefaultCloudsFile, "/x/" + testImageName},
		{"explicit", "/c.yaml", "/i.qcow2", "/x", "/c.yaml", "/i.qcow2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("GRIB_IT_CLOUDS", tt.clouds)
			t.Setenv("GRIB_TEST_IMAGE", tt.image)
			t.Setenv("GRIB_TEST_IMAGE_DIR", tt.imageDir)
			if got := CloudsFile(); got != tt.wantClouds {
				t.Errorf("CloudsFile() = %q, want %q", got, tt.wantClouds)
			}
			if got := TestImage(); got != tt.wantImage {
				t.Errorf("TestImage() = %q, want %q", got, tt.wantImage)
			}
		})
	}
}

func TestNewPrefix(t *testing.T) {
	shape := regexp.MustCompile(`^it-[a-z0-9]{6}$`)
	seen := map[string]bool{}
	for range 200 {
		p := newPrefix()
		if !shape.MatchString(p) {
			t.Fatalf("prefix %q does not match %s", p, shape)
		}
		seen[p] = true
	}
	// 36^6 possibilities: 200 draws colliding more than once means a broken generator.
	if len(seen) < 199 {
		t.Errorf("only %d distinct prefixes in 200 draws", len(seen))
	}
}

func TestConsoleHostKeys(t *testing.T) {
	sample, err := os.ReadFile(filepath.Join("testdata", "console-cloud-init.txt"))
	if err != nil {
		t.Fatal(err)
	}
	ed := testKey(t)
	edLine := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ed)))
	tests := []struct {
		name    string
		console string
		want    []string // key types, in order
		wantErr bool
	}{
		{"real cloud-init console", string(sample), []string{"ecdsa-sha2-nistp256", "ssh-ed25519"}, false},
		{"no block yet", "[  1.0] booting\n", nil, true},
		{"block not finished", hostKeysBegin + "\n" + edLine + "\n", nil, true},
		{"end without begin", edLine + "\n" + hostKeysEnd + "\n", nil, true},
		{"empty block", hostKeysBegin + "\n" + hostKeysEnd + "\n", nil, true},
		{"garbage in block", hostKeysBegin + "\nssh-ed25519 notbase64!\n" + hostKeysEnd, nil, true},
		{"prefixed lines, CRLF", "x\r\n" + hostKeysBegin + "\r\n<14>Nov 23 cloud-init: " + edLine + " root@h\r\n" + hostKeysEnd + "\r\n",
			[]string{"ssh-ed25519"}, false},
		{"last block wins", hostKeysBegin + "\nssh-ed25519 AAAA bad\n" + hostKeysEnd + "\n" +
			hostKeysBegin + "\n" + edLine + "\n" + hostKeysEnd + "\n", []string{"ssh-ed25519"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := ConsoleHostKeys(tt.console)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			var got []string
			for _, k := range keys {
				got = append(got, k.Type())
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("key types = %v, want %v", got, tt.want)
			}
		})
	}
}

func FuzzConsoleHostKeys(f *testing.F) {
	sample, err := os.ReadFile(filepath.Join("testdata", "console-cloud-init.txt"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(sample))
	f.Add(hostKeysBegin + "\n" + hostKeysEnd)
	f.Fuzz(func(t *testing.T, console string) {
		keys, err := ConsoleHostKeys(console)
		if err == nil && len(keys) == 0 {
			t.Fatal("no error and no keys")
		}
		for _, k := range keys {
			if _, err := ssh.ParsePublicKey(k.Marshal()); err != nil {
				t.Fatalf("returned key does not round-trip: %v", err)
			}
		}
	})
}

func TestFixedHostKeys(t *testing.T) {
	known, other := testKey(t), testKey(t)
	cb := fixedHostKeys([]ssh.PublicKey{known})
	addr := &net.TCPAddr{IP: net.IPv4(127, 77, 0, 5), Port: 22}
	if err := cb("127.77.0.5:22", addr, known); err != nil {
		t.Errorf("known key refused: %v", err)
	}
	if err := cb("127.77.0.5:22", addr, other); err == nil {
		t.Error("unknown key accepted")
	}
	if err := fixedHostKeys(nil)("h", addr, known); err == nil {
		t.Error("a key accepted with no known keys")
	}
}

func TestFixedIPv4(t *testing.T) {
	tests := []struct {
		name    string
		addrs   map[string]any
		want    string
		wantErr bool
	}{
		{"v4 after v6", map[string]any{"it-net": []any{
			map[string]any{"addr": "fd00::5", "version": float64(6)},
			map[string]any{"addr": "127.77.0.5", "version": float64(4)},
		}}, "127.77.0.5", false},
		{"other network only", map[string]any{"x": []any{map[string]any{"addr": "127.0.0.9", "version": float64(4)}}}, "", true},
		{"malformed", map[string]any{"it-net": "127.77.0.5"}, "", true},
		{"no addresses", nil, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FixedIPv4(&servers.Server{ID: "s", Addresses: tt.addrs}, "it-net")
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("FixedIPv4 = %q, %v; want %q, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func testKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestParseBoots(t *testing.T) {
	const record = "2026-11-23T09:19:18Z\tit-abc123-vm\tu1\tspawn\timg1\t478150656\ttcg\n" +
		"2026-11-23T09:20:00Z\tit-zzz999-first\tu2\tspawn\timg2\t1048576\ttcg\n" +
		"\n" +
		"2026-11-23T09:21:00Z\tit-abc123-vm\tu1\tpower_on\timg1\t478150656\ttcg\n"
	tests := []struct {
		name    string
		record  string
		prefix  string
		want    []string // server/kind
		wantErr bool
	}{
		{"all", record, "", []string{"it-abc123-vm/spawn", "it-zzz999-first/spawn", "it-abc123-vm/power_on"}, false},
		{"one test's prefix", record, "it-abc123", []string{"it-abc123-vm/spawn", "it-abc123-vm/power_on"}, false},
		{"no match", record, "it-nothing", nil, false},
		{"empty file", "", "", nil, false},
		{"too few fields", "2026-11-23T09:19:18Z\tit-a\tu1\tspawn\n", "", nil, true},
		{"bad time", "yesterday\tit-a\tu1\tspawn\timg\t1\ttcg\n", "", nil, true},
		{"bad size", "2026-11-23T09:19:18Z\tit-a\tu1\tspawn\timg\tbig\ttcg\n", "", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			boots, err := parseBoots(strings.NewReader(tt.record), tt.prefix)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			var got []string
			for _, b := range boots {
				got = append(got, b.Server+"/"+b.Kind)
			}
			if strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Errorf("boots = %v, want %v", got, tt.want)
			}
		})
	}
	boots, err := parseBoots(strings.NewReader(record), "it-abc123")
	if err != nil {
		t.Fatal(err)
	}
	if b := boots[0]; b.ServerID != "u1" || b.ImageID != "img1" || b.ImageBytes != 478150656 || b.Accel != "tcg" ||
		!b.Time.Equal(time.Date(2026, 11, 23, 9, 19, 18, 0, time.UTC)) {
		t.Errorf("first boot parsed as %+v", b)
	}
}

func TestGuestBootsFile(t *testing.T) {
	t.Setenv("GRIB_GUEST_BOOTS", "")
	if got := GuestBootsFile(); got != DefaultGuestBootsFile {
		t.Errorf("default = %q", got)
	}
	p := filepath.Join(t.TempDir(), "boots.log")
	t.Setenv("GRIB_GUEST_BOOTS", p)
	if got := GuestBootsFile(); got != p {
		t.Errorf("from the environment = %q, want %q", got, p)
	}
	if _, err := GuestBoots(""); err == nil {
		t.Error("GuestBoots of a missing file: no error")
	}
	if err := os.WriteFile(p, []byte("2026-11-23T09:19:18Z\tit-q-vm\tu1\treboot\timg\t5\tkvm\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if boots, err := GuestBoots("it-q"); err != nil || len(boots) != 1 || boots[0].Kind != "reboot" {
		t.Errorf("GuestBoots = %+v, %v", boots, err)
	}
}

// TestLockedBufferConcurrentCopies: Run copies a session's stdout and stderr
// into one LockedBuffer from two goroutines, each blocked in a Read while the
// other writes (as on an SSH channel). No byte may be lost; a plain
// bytes.Buffer loses nearly all of one stream here.
func TestLockedBufferConcurrentCopies(t *testing.T) {
	const n = 2000
	var b LockedBuffer
	ra, wa := io.Pipe()
	rb, wb := io.Pipe()
	var wg sync.WaitGroup
	for _, r := range []io.Reader{ra, rb} {
		wg.Go(func() {
			if _, err := io.Copy(&b, r); err != nil {
				t.Error(err)
			}
		})
	}
	for range n { // each Write returns once a copier has read it
		if _, err := wa.Write([]byte("a")); err != nil {
			t.Fatal(err)
		}
		if _, err := wb.Write([]byte("b")); err != nil {
			t.Fatal(err)
		}
	}
	wa.Close()
	wb.Close()
	wg.Wait()
	got := b.String()
	if len(got) != 2*n || strings.Count(got, "a") != n || strings.Count(got, "b") != n {
		t.Errorf("got %d bytes: %d a, %d b; want %d of each", len(got), strings.Count(got, "a"), strings.Count(got, "b"), n)
	}
}

// SecretForms finds the secret on its own, encoded alone as it travels on
// stdin, and inside a longer base64 stream at every alignment.
func TestSecretForms(t *testing.T) {
	secret := "grib-secret-0123456789abcdef0123456789abcdef"
	found := func(haystack string) bool {
		for _, f := range SecretForms(secret) {
			if strings.Contains(haystack, f) {
				return true
			}
		}
		return false
	}
	if !found("x " + secret + " y") {
		t.Error("the plain value is not found")
	}
	if !found("GRIB_SECRET " + base64.StdEncoding.EncodeToString([]byte(secret)) + "\n") {
		t.Error("the value as it travels on stdin is not found")
	}
	for before := range 6 {
		for after := range 3 {
			doc := strings.Repeat("p", before) + secret + strings.Repeat("q", after)
			if enc := base64.StdEncoding.EncodeToString([]byte(doc)); !found(enc) {
				t.Errorf("the value inside base64 of %q is not found in %q", doc, enc)
			}
		}
	}
	other := base64.StdEncoding.EncodeToString([]byte("grib-secret-fedcba9876543210fedcba9876543210"))
	if found(other) {
		t.Error("another secret's encoding matched")
	}
}
