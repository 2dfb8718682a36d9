package qemu

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestArgvGolden(t *testing.T) {
	x86, err := hostMachine(config.ArchX64, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	arm, err := hostMachine(config.ArchARM, "arm64")
	if err != nil {
		t.Fatal(err)
	}
	base := launch{
		machine: x86, accel: AccelTCG, memoryMiB: 2048, cpus: 2,
		overlay: "/w/disk.qcow2", seed: "/w/seed.iso", console: "/w/console.log", qmp: "/w/qmp.sock",
		sshPort: 23456, netSocket: "/w/passt.sock", name: "grib-abc",
	}
	with := func(f func(*launch)) launch { l := base; f(&l); return l }
	cases := map[string]launch{
		"x64-tcg":          base,
		"x64-kvm-isolated": with(func(l *launch) { l.accel, l.isolated, l.memoryMiB, l.cpus = AccelKVM, true, 1024, 1 }),
		"arm64-tcg":        with(func(l *launch) { l.machine = arm }),
		"x64-comma-paths": with(func(l *launch) {
			l.overlay, l.seed, l.console, l.qmp, l.netSocket = "/a,b/disk.qcow2", "/a,b/seed.iso", "/a,b/console.log", "/a,b/qmp.sock", "/a,b/passt.sock"
		}),
	}
	for name, l := range cases {
		t.Run(name, func(t *testing.T) {
			got := strings.Join(l.argv(), "\n") + "\n"
			path := filepath.Join("testdata", "argv-"+name+".txt")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("argv differs from %s:\n--- got\n%s--- want\n%s", path, got, want)
			}
		})
	}
}

// The properties the golden files must keep, whatever else changes.
func TestArgvInvariants(t *testing.T) {
	m, _ := hostMachine(config.ArchX64, "amd64")
	for _, isolated := range []bool{false, true} {
		l := launch{machine: m, accel: AccelTCG, memoryMiB: 512, cpus: 1, overlay: "o", seed: "s",
			console: "c", qmp: "q", sshPort: 12345, isolated: isolated, name: "n"}
		l.netSocket = "/w/passt.sock"
		args := strings.Join(l.argv(), " ")
		// Isolated: slirp, restricted, forwarding only SSH on 127.0.0.1.
		// Otherwise passt (which forwards SSH itself), never slirp: slirp
		// would map 10.0.2.2 to this host's loopback.
		if got := strings.Contains(args, "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:12345-:22 "); got != isolated {
			t.Errorf("isolated=%v: restricted slirp with the SSH forward on 127.0.0.1 present=%v: %s", isolated, got, args)
		}
		if got := strings.Contains(args, "-netdev stream,id=net0,server=off,addr.type=unix,addr.path=/w/passt.sock "); got == isolated {
			t.Errorf("isolated=%v: passt's stream netdev present=%v: %s", isolated, got, args)
		}
		if strings.Count(args, "-netdev ") != 1 {
			t.Errorf("isolated=%v: want exactly one netdev: %s", isolated, args)
		}
		for _, want := range []string{"-nodefaults", "-no-user-config", "-no-reboot", "-display none", "readonly=on",
			"-cpu max", "-accel tcg"} {
			if !strings.Contains(args, want) {
				t.Errorf("argv lacks %q: %s", want, args)
			}
		}
	}
}

func TestHostMachine(t *testing.T) {
	tests := []struct {
		arch    config.Arch
		goarch  string
		binary  string
		wantErr string
	}{
		{config.ArchX64, "amd64", "qemu-system-x86_64", ""},
		{config.ArchARM64, "arm64", "qemu-system-aarch64", ""},
		{config.ArchARM, "arm64", "qemu-system-aarch64", ""}, // armhf runner on an arm64 image
		{config.ArchARM64, "amd64", "", "this host is amd64 (x64) and the local builder runs only the host's own architecture"},
		{config.ArchX64, "arm64", "", "runs only the host's own architecture"},
		{config.ArchS390X, "s390x", "", "amd64 and arm64 hosts only"},
		{config.ArchX64, "riscv64", "", "this host is riscv64"},
	}
	for _, tt := range tests {
		t.Run(string(tt.arch)+"-on-"+tt.goarch, func(t *testing.T) {
			m, err := hostMachine(tt.arch, tt.goarch)
			if tt.wantErr == "" {
				if err != nil || m.binary != tt.binary {
					t.Fatalf("got %q, %v; want %s", m.binary, err, tt.binary)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
			if errs.ExitCode(err) != 2 {
				t.Errorf("exit code %d, want 2 (usage)", errs.ExitCode(err))
			}
		})
	}
}

func TestGuestProxy(t *testing.T) {
	tests := []struct {
		proxy    string
		isolated bool
		want     string
		wantErr  string
	}{
		{"", false, "", ""},
		{"", true, "", ""},
		{"squid.internal:3128", false, "squid.internal:3128", ""},
		{"10.1.2.3:8080", false, "10.1.2.3:8080", ""},
		{"127.0.0.1:3128", false, "", "does not reach this host's loopback"},
		{"localhost:3128", false, "", "does not reach this host's loopback"},
		{"127.0.0.53:3128", false, "", "does not reach this host's loopback"},
		{"[::1]:3128", false, "", "does not reach this host's loopback"},
		{"192.0.2.10:3128", false, "192.0.2.10:3128", ""},
		{"squid.internal:3128", true, "", "--isolated"},
		{"nonsense", false, "", "host:port"},
	}
	for _, tt := range tests {
		got, err := GuestProxy(tt.proxy, tt.isolated)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || errs.ExitCode(err) != 2 {
				t.Errorf("GuestProxy(%q, %v) = %q, %v; want a usage error with %q", tt.proxy, tt.isolated, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("GuestProxy(%q, %v) = %q, %v; want %q", tt.proxy, tt.isolated, got, err, tt.want)
		}
	}
}
