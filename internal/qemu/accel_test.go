package qemu

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
)

func TestAccelDecision(t *testing.T) {
	tests := []struct {
		name      string
		force     Accel
		openErr   error
		probeErr  error
		want      Accel
		reason    string
		wantProbe bool
	}{
		{"forced tcg", AccelTCG, nil, nil, AccelTCG, "forced", false},
		{"forced kvm", AccelKVM, errors.New("no device"), nil, AccelKVM, "forced", false},
		{"no /dev/kvm", "", errors.New("no such file"), nil, AccelTCG, "is not usable: no such file", false},
		{"kvm opens but guest does not run", "", nil, errors.New("no output from the guest within 10s"), AccelTCG, "a KVM guest did not run: no output", true},
		{"kvm runs a guest", "", nil, nil, AccelKVM, "a KVM guest ran", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			probed := 0
			p := &AccelProbe{
				Force:    tt.force,
				openKVM:  func(string) error { return tt.openErr },
				runProbe: func(context.Context, *AccelProbe) error { probed++; return tt.probeErr },
			}
			got, reason := p.Accel(context.Background())
			if got != tt.want || !strings.Contains(reason, tt.reason) {
				t.Errorf("Accel = %s (%s), want %s (%s)", got, reason, tt.want, tt.reason)
			}
			if (probed > 0) != tt.wantProbe {
				t.Errorf("probe ran %d times, want ran=%v", probed, tt.wantProbe)
			}
		})
	}
}

func TestAccelProbeIsCached(t *testing.T) {
	probed := 0
	p := &AccelProbe{
		openKVM:  func(string) error { return nil },
		runProbe: func(context.Context, *AccelProbe) error { probed++; return nil },
	}
	for range 3 {
		if a, _ := p.Accel(context.Background()); a != AccelKVM {
			t.Fatalf("Accel = %s", a)
		}
	}
	if probed != 1 {
		t.Errorf("probe ran %d times, want once", probed)
	}
}

func TestAccelProbeInterruptedIsNotCached(t *testing.T) {
	probed := 0
	p := &AccelProbe{
		openKVM: func(string) error { return nil },
		runProbe: func(ctx context.Context, _ *AccelProbe) error {
			probed++
			return ctx.Err()
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if a, _ := p.Accel(ctx); a != AccelTCG {
		t.Fatalf("interrupted probe chose %s", a)
	}
	if a, _ := p.Accel(context.Background()); a != AccelKVM || probed != 2 {
		t.Errorf("after an interrupted probe: %s, probed %d times; want kvm, 2", a, probed)
	}
}

func TestParseAccel(t *testing.T) {
	for in, want := range map[string]Accel{"": "", "KVM": AccelKVM, " tcg ": AccelTCG} {
		if got, err := ParseAccel(in); err != nil || got != want {
			t.Errorf("ParseAccel(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseAccel("hvf"); err == nil {
		t.Error("ParseAccel(hvf) succeeded")
	}
}

func TestBootSector(t *testing.T) {
	for _, exit := range []bool{false, true} {
		s := bootSector("HELLO", exit)
		if len(s) != 512 || s[510] != 0x55 || s[511] != 0xAA {
			t.Fatalf("exit=%v: not a boot sector (len %d, signature % x)", exit, len(s), s[510:])
		}
		addr := int(s[6]) | int(s[7])<<8
		if off := addr - 0x7C00; off < 0 || off > 500 || !bytes.HasPrefix(s[off:], []byte("HELLO\x00")) {
			t.Errorf("exit=%v: mov si points at %#x, which does not hold the message", exit, addr)
		}
		if got := bytes.Contains(s, []byte{0xBA, 0xF4, 0x00}); got != exit {
			t.Errorf("exit=%v: isa-debug-exit write present=%v", exit, got)
		}
	}
}

// The real probe guest under TCG must print its marker and leave qemu: this
// is what makes a KVM probe's success meaningful. A guest that prints
// nothing must fail the probe at its deadline, and leave no qemu behind.
func TestProbeGuestUnderTCG(t *testing.T) {
	requireX86Qemu(t)
	m, err := hostMachine(config.ArchX64, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := runProbeGuest(ctx, config.ChildEnv(os.Getenv), m.binary, m, AccelTCG, m.tcgCPU, 30*time.Second, bootSector(probeMarker+"\r\n", true)); err != nil {
		t.Fatalf("the probe guest did not run under TCG: %v", err)
	}
	// Marker printed, but the guest halts instead of exiting: still a success.
	if err := runProbeGuest(ctx, config.ChildEnv(os.Getenv), m.binary, m, AccelTCG, m.tcgCPU, 30*time.Second, bootSector(probeMarker+"\r\n", false)); err != nil {
		t.Fatalf("a halting probe guest that printed the marker: %v", err)
	}
	err = runProbeGuest(ctx, config.ChildEnv(os.Getenv), m.binary, m, AccelTCG, m.tcgCPU, 2*time.Second, bootSector("something else\r\n", false))
	if err == nil || !strings.Contains(err.Error(), "no output from the guest within 2s") {
		t.Fatalf("a guest without the marker: %v, want a deadline error", err)
	}
	// qemu that cannot start at all (unknown accelerator) fails with its message.
	err = runProbeGuest(ctx, config.ChildEnv(os.Getenv), m.binary, m, Accel("nosuchaccel"), m.tcgCPU, 10*time.Second, bootSector(probeMarker, true))
	if err == nil || !strings.Contains(err.Error(), "nosuchaccel") {
		t.Fatalf("qemu with a bad accelerator: %v, want its error", err)
	}
}
