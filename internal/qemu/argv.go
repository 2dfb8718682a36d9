package qemu

import (
	"fmt"
	"strconv"
	"strings"
)

// launch is everything qemu's command line is made of, resolved.
type launch struct {
	machine   machine
	accel     Accel
	memoryMiB int
	cpus      int
	overlay   string // the guest's disk: a qcow2 overlay
	seed      string // the NoCloud seed ISO
	console   string // serial console output file
	qmp       string // QMP unix socket
	sshPort   int    // forwarded from 127.0.0.1:sshPort to the guest's port 22
	isolated  bool   // slirp with restrict=on, forwarding only SSH
	netSocket string // not isolated: passt's socket (passt forwards SSH)
	name      string
}

// argv returns the arguments of qemu-system-<arch> (without the program).
//
// -nodefaults and -no-user-config: only the devices listed here, nothing
// from a host-wide config. -no-reboot: a guest reboot ends qemu like a
// poweroff (an image build never reboots; if it does, the build sees it).
// cache=unsafe: writes are not flushed until qemu exits, which is faster
// under emulation; a VM that does not exit cleanly is discarded anyway.
func (l launch) argv() []string {
	cpu := l.machine.tcgCPU
	if l.accel == AccelKVM {
		cpu = l.machine.kvmCPU
	}
	// Isolated: slirp reaches nothing (restrict=on), only its SSH forward
	// reaches the guest. Otherwise passt is the network (see passt.go):
	// slirp would map 10.0.2.2 to this host's loopback.
	netdev := fmt.Sprintf("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:%d-:22", l.sshPort)
	if !l.isolated {
		netdev = "stream,id=net0,server=off,addr.type=unix,addr.path=" + optValue(l.netSocket)
	}
	args := []string{
		"-name", l.name,
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
	}
	args = append(args, l.machine.args...)
	args = append(args,
		"-accel", string(l.accel), "-cpu", cpu,
		"-m", strconv.Itoa(l.memoryMiB), "-smp", strconv.Itoa(l.cpus),
		"-chardev", "file,id=console0,path="+optValue(l.console),
		"-serial", "chardev:console0",
		"-drive", "file="+optValue(l.overlay)+",if=virtio,format=qcow2,cache=unsafe,discard=unmap",
		"-drive", "file="+optValue(l.seed)+",if=virtio,format=raw,readonly=on",
		"-netdev", netdev, "-device", "virtio-net-pci,netdev=net0",
		"-device", "virtio-rng-pci",
		"-qmp", "unix:"+optValue(l.qmp)+",server=on,wait=off",
	)
	return args
}

// optValue escapes a value inside a qemu option list, where ',' separates
// options and ",," stands for a literal comma.
func optValue(s string) string { return strings.ReplaceAll(s, ",", ",,") }
