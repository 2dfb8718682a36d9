package qemu

import (
	"fmt"
	"runtime"

	"github.com/runner-image-builder/github-runner-image-builder/internal/config"
	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// machine is how qemu emulates one host architecture.
type machine struct {
	binary string   // qemu-system-<arch>
	args   []string // machine type and firmware
	kvmCPU string   // -cpu under KVM
	tcgCPU string   // -cpu under TCG
}

// aarch64Firmware is the UEFI firmware of Debian's and Ubuntu's
// qemu-efi-aarch64 package; aarch64 "virt" machines boot cloud images with it.
const aarch64Firmware = "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd"

// hostMachine returns the machine for building arch a on a host whose Go
// architecture is goarch (runtime.GOARCH). The local builder runs only the
// host's own architecture: anything else is a usage error (exit 2).
func hostMachine(a config.Arch, goarch string) (machine, error) {
	host := config.HostArch(goarch)
	if host == "" || a.CloudImage() != host.CloudImage() {
		hostName := goarch
		if host != "" {
			hostName = fmt.Sprintf("%s (%s)", goarch, host)
		}
		return machine{}, errs.Usage("--arch %s with --builder local: this host is %s and the local builder runs only the host's own architecture; use --builder openstack", a, hostName)
	}
	switch host.CloudImage() {
	case "amd64":
		// -cpu max under TCG: every feature TCG emulates (SSE4.2 and
		// friends, which runtimes inside the image may need); qemu64 is a
		// little faster but too old for some of them.
		return machine{binary: "qemu-system-x86_64", args: []string{"-machine", "pc"}, kvmCPU: "host", tcgCPU: "max"}, nil
	case "arm64":
		return machine{binary: "qemu-system-aarch64", args: []string{"-machine", "virt,gic-version=max", "-bios", aarch64Firmware},
			kvmCPU: "host", tcgCPU: "max"}, nil
	}
	return machine{}, errs.Usage("--builder local runs on amd64 and arm64 hosts only; this host is %s: use --builder openstack", goarch)
}

// goarch is the architecture this program runs on.
func goarch() string { return runtime.GOARCH }
