package builder

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/qemu"
	"github.com/runner-image-builder/github-runner-image-builder/internal/testenv"
)

// benchUserData is a recipe that does nothing: the figure is the boot and
// cloud-init's own work, not a recipe's.
const benchUserData = "#cloud-config\n"

// BenchmarkLocalBoot boots the test guest image (.ci/make-test-image.sh)
// twice under qemu, as the local builder launches it (internal/qemu, NoCloud
// seed, isolated network, SSH forwarded on 127.0.0.1):
//
//   - bare-boot-s: from starting qemu to the login prompt on the serial
//     console: the guest's own boot, nothing of ours waiting on it;
//   - cloud-init-done-s: from starting qemu to the local builder's "ssh"
//     and "cloud-init" steps having seen cloud-init finish (host key from
//     the console, SSH with backoff, status polls).
//
// The difference is what the builder's waiting adds plus cloud-init's final
// stages. Two guest boots per iteration.
func BenchmarkLocalBoot(b *testing.B) {
	requireBench(b)
	image := testenv.RequireImage(b)
	for _, n := range []string{"qemu-system-x86_64", "qemu-img", "genisoimage"} {
		if _, err := exec.LookPath(n); err != nil {
			b.Skipf("%s is not installed", n)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	accel, why := (&qemu.AccelProbe{}).Accel(ctx)
	b.Logf("accelerator %s (%s)", accel, why)

	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		b.Fatal(err)
	}
	authorized := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	hostKey, userData, err := guestHostKey(nil, []byte(benchUserData), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	spec := func() qemu.Spec {
		return qemu.Spec{BaseImage: image, Arch: config.ArchX64, UserData: userData,
			AuthorizedKeys: []string{authorized}, Isolated: true, Accel: accel, TempDir: b.TempDir()}
	}

	var bare, done, lag time.Duration
	lags := 0
	for b.Loop() {
		// Bare boot: qemu until the login prompt.
		start := time.Now()
		vm, err := qemu.Start(ctx, spec())
		if err != nil {
			b.Fatal(err)
		}
		err = waitConsole(ctx, vm, "login:")
		bare += time.Since(start)
		_ = vm.Close()
		if err != nil {
			b.Fatal(err)
		}

		// The local builder's way: qemu, then its ssh and cloud-init steps.
		start = time.Now()
		vm, err = qemu.Start(ctx, spec())
		if err != nil {
			b.Fatal(err)
		}
		// Watch the console for cloud-init's own "finished" line, to see
		// how long after it the builder's steps notice.
		finished := make(chan time.Time, 1)
		wctx, stopWatch := context.WithCancel(ctx)
		go func() {
			if waitConsole(wctx, vm, cloudInitFinishedLine) == nil {
				finished <- time.Now()
			}
			close(finished)
		}()
		steps := slices.DeleteFunc(GuestSteps(GuestConfig{
			Address: func(context.Context) (string, error) { return vm.SSHAddr(), nil },
			Signer:  signer, HostKey: hostKey.PublicKey(), Console: vm.ConsoleOutput, Timeouts: config.DefaultTimeouts(),
		}), func(s Step) bool { return s.Name != "ssh" && s.Name != "cloud-init" })
		err = (&Runner{}).Run(ctx, steps)
		noticed := time.Now()
		done += noticed.Sub(start)
		// The console may lag the guest: give it a moment to show the line.
		var at time.Time
		seen := false
		t := time.NewTimer(10 * time.Second)
		select {
		case at, seen = <-finished:
		case <-t.C:
		}
		t.Stop()
		stopWatch()
		if seen {
			lag += noticed.Sub(at)
			lags++
		}
		_ = vm.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	if lags > 0 {
		b.ReportMetric(lag.Seconds()/float64(lags), "notice-lag-s")
	}
	b.ReportMetric(bare.Seconds()/float64(b.N), "bare-boot-s")
	b.ReportMetric(done.Seconds()/float64(b.N), "cloud-init-done-s")
	b.ReportMetric(0, "ns/op")
}

// cloudInitFinishedLine is in the line cloud-init prints on the console
// when its final stage ends ("Cloud-init v. 22.4.2 finished at ...").
const cloudInitFinishedLine = " finished at "

// waitConsole polls the VM's console every 100 ms until it shows want.
func waitConsole(ctx context.Context, vm *qemu.VM, want string) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		out, _ := vm.ConsoleOutput(ctx)
		if strings.Contains(out, want) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-vm.Exited():
			return context.Cause(ctx)
		case <-t.C:
		}
	}
}
