package provision

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// Excerpts of `cloud-init clean --help` across versions.
const (
	cleanHelp24 = `usage: /usr/bin/cloud-init clean [-h] [-l] [--machine-id] [-r] [-s] [-c {all,ssh_config,network} [{all,ssh_config,network} ...]]
  -l, --logs            Remove cloud-init logs.
  --machine-id          Set /etc/machine-id to 'uninitialized'...
  -c, --configs {all,ssh_config,network}`
	cleanHelp22 = `usage: /usr/bin/cloud-init clean [-h] [-l] [--machine-id] [-r] [-s]
  --machine-id  Remove /etc/machine-id for golden image creation.`
	cleanHelp20 = `usage: /usr/bin/cloud-init clean [-h] [-l] [-r] [-s]
  -l, --logs    Remove cloud-init logs.`
)

func TestCloudInitCleanArgs(t *testing.T) {
	tests := []struct {
		help      string
		want      string
		machineID bool
	}{
		{cleanHelp24, "--logs --seed --machine-id --configs all", true},
		{cleanHelp22, "--logs --seed --machine-id", true},
		{cleanHelp20, "--logs --seed", false},
	}
	for _, tt := range tests {
		got, machineID := cloudInitCleanArgs(tt.help)
		if got != tt.want || machineID != tt.machineID {
			t.Errorf("got %q, %v; want %q, %v", got, machineID, tt.want, tt.machineID)
		}
	}
}

func TestClean(t *testing.T) {
	tests := []struct {
		name string
		help string
		want []string // commands after the help, in order
	}{
		{"current cloud-init", cleanHelp24, []string{"sudo -n cloud-init clean --logs --seed --machine-id --configs all", "sudo -n fstrim --all --verbose", "sudo -n sync"}},
		{"old cloud-init", cleanHelp20, []string{"sudo -n cloud-init clean --logs --seed", "sudo -n truncate -s 0 /etc/machine-id", "sudo -n fstrim --all --verbose", "sudo -n sync"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var removeKey string
			table := map[string]answer{"cloud-init clean --help": {stdout: tt.help}}
			for _, c := range tt.want {
				table[c] = answer{}
			}
			f := startFakeGuest(t, nil)
			blob := base64.StdEncoding.EncodeToString(f.buildKey.PublicKey().Marshal())
			removeKey = fmt.Sprintf("sudo -n /bin/sh -c %s grib-clean %s 'ubuntu' '/root/.ssh/authorized_keys'", shellQuote(removeKeyCommand), shellQuote(blob))
			table[removeKey] = answer{}
			removeHostKeys := "sudo -n /bin/sh -c " + shellQuote(removeHostKeysCommand) + " grib-clean-host-keys"
			table[removeHostKeys] = answer{}
			f.setHandler(scripted(t, table))
			g := f.dial(t)
			if err := g.Clean(context.Background()); err != nil {
				t.Fatal(err)
			}
			want := append([]string{removeKey, removeHostKeys, "cloud-init clean --help"}, tt.want...)
			if got := f.commands(); !slices.Equal(got, want) {
				t.Errorf("commands:\n%q\nwant:\n%q", got, want)
			}
		})
	}
}

func TestCleanFailureIsBuildError(t *testing.T) {
	f := startFakeGuest(t, nil)
	f.setHandler(func(e *execRequest) int {
		if e.Cmd == "cloud-init clean --help" {
			_, _ = e.Stdout.Write([]byte(cleanHelp24))
			return 0
		}
		if e.Cmd == "sudo -n cloud-init clean --logs --seed --machine-id --configs all" {
			_, _ = e.Stderr.Write([]byte("Error: could not remove /var/lib/cloud\n"))
			return 1
		}
		return 0
	})
	err := f.dial(t).Clean(context.Background())
	if !errs.Is(err, errs.KindBuild) {
		t.Fatalf("got %v, want a build error", err)
	}
	for _, s := range []string{"resetting cloud-init", "could not remove /var/lib/cloud"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
}

// removeKeyCommand runs here for real on a stand-in for root's file; the
// user does not exist, so no home directory is touched.
func TestRemoveKeyCommand(t *testing.T) {
	builder := "AAAAC3NzaC1lZDI1NTE5AAAAIBuilderKeyBlob+/="
	other := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKey other@garm\n"
	tests := []struct {
		name, before, after string
	}{
		{"builder key among others", "no-port-forwarding,command=\"echo 'Please login as ubuntu'\" ssh-ed25519 " + builder + " builder\n" + other, other},
		{"only the builder key", "ssh-ed25519 " + builder + " builder\n", ""},
		{"no builder key", other, other},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "authorized_keys")
			if err := os.WriteFile(file, []byte(tt.before), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("/bin/sh", "-c", removeKeyCommand, "grib-clean", builder, "no-such-user-grib", file).CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			got, _ := os.ReadFile(file)
			if string(got) != tt.after {
				t.Errorf("file holds %q, want %q", got, tt.after)
			}
			if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
				t.Errorf("mode %v, want 0600", fi.Mode().Perm())
			}
			if left, _ := filepath.Glob(file + ".*"); len(left) != 0 {
				t.Errorf("left %v", left)
			}
		})
	}
}

func TestPowerOff(t *testing.T) {
	const cmd = "sudo -n /bin/sh -c 'systemctl poweroff || shutdown -h now'"
	tests := []struct {
		name    string
		handle  func(e *execRequest) int
		wantErr bool
	}{
		{"guest drops the connection", func(e *execRequest) int { e.Drop(); return 0 }, false},
		{"command returns before the drop", func(*execRequest) int { return 0 }, false},
		{"sudo refuses", func(e *execRequest) int {
			_, _ = e.Stderr.Write([]byte("sudo: a password is required\n"))
			return 1
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFakeGuest(t, func(e *execRequest) int {
				if e.Cmd != cmd {
					t.Errorf("unexpected command %q", e.Cmd)
					return 127
				}
				return tt.handle(e)
			})
			err := f.dial(t).PowerOff(context.Background())
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tt.wantErr)
			}
			if tt.wantErr && (!errs.Is(err, errs.KindBuild) || !strings.Contains(err.Error(), "password is required")) {
				t.Errorf("error %v", err)
			}
		})
	}
}

// A disk that does not pass discards makes fstrim fail: the cleaning goes
// on (sync still runs) and the failure is logged as a warning.
func TestCleanFstrimFailureIsNotFatal(t *testing.T) {
	f := startFakeGuest(t, nil)
	var ran []string
	var mu sync.Mutex
	f.setHandler(func(e *execRequest) int {
		mu.Lock()
		ran = append(ran, e.Cmd)
		mu.Unlock()
		switch e.Cmd {
		case "cloud-init clean --help":
			_, _ = e.Stdout.Write([]byte(cleanHelp24))
		case "sudo -n fstrim --all --verbose":
			_, _ = e.Stderr.Write([]byte("fstrim: /: the discard operation is not supported\n"))
			return 1
		}
		return 0
	})
	var logs bytes.Buffer
	g := f.dial(t)
	g.log = slog.New(slog.NewTextHandler(&logs, nil))
	if err := g.Clean(context.Background()); err != nil {
		t.Fatalf("Clean: %v, want fstrim's failure tolerated", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ran) == 0 || ran[len(ran)-1] != "sudo -n sync" {
		t.Errorf("commands %q: want sync last, after fstrim", ran)
	}
	if !strings.Contains(logs.String(), "level=WARN msg=\"fstrim failed") || !strings.Contains(logs.String(), "discard operation is not supported") {
		t.Errorf("log %q has no warning naming fstrim's failure", logs.String())
	}
}

// The zeroing script is a golden file, passes shellcheck, and is sent as
// root's sh -c; its failure is a build error naming what failed.
func TestZeroFreeSpace(t *testing.T) {
	golden := filepath.Join("testdata", "zero-free-space.sh.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(zeroFreeSpaceCommand+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != zeroFreeSpaceCommand+"\n" {
		t.Errorf("the zeroing script differs from %s (go test -update)", golden)
	}
	if _, err := exec.LookPath("shellcheck"); err == nil {
		if out, err := exec.Command("shellcheck", "-s", "sh", golden).CombinedOutput(); err != nil {
			t.Errorf("shellcheck %s: %v\n%s", golden, err, out)
		}
	}
	cmd := "sudo -n /bin/sh -c " + shellQuote(zeroFreeSpaceCommand) + " grib-zero"
	tests := []struct {
		name string
		code int
		ok   bool
	}{{"zeroed", 0, true}, {"failed", 1, false}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFakeGuest(t, nil)
			f.setHandler(scripted(t, map[string]answer{cmd: {stdout: "zeroed the free space of /\n", stderr: "findmnt: broken", code: tt.code}}))
			err := f.dial(t).ZeroFreeSpace(context.Background())
			if tt.ok != (err == nil) || (!tt.ok && (!errs.Is(err, errs.KindBuild) || !strings.Contains(err.Error(), "findmnt: broken"))) {
				t.Errorf("err = %v, want ok %v (else a build error with the guest's message)", err, tt.ok)
			}
			if got := f.commands(); !slices.Equal(got, []string{cmd}) {
				t.Errorf("commands %q, want the script as root", got)
			}
		})
	}
}
