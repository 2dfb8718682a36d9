// Package qemu runs one throwaway virtual machine on this host for the local
// builder: a copy-on-write overlay of a base image, a NoCloud seed with the
// user-data, SSH forwarded from a free port on 127.0.0.1, the serial console
// in a file and a QMP socket to power it down and see it exit.
//
// Life of a VM:
//
//	vm, err := qemu.Start(ctx, spec) // overlay, seed, port, qemu running
//	defer vm.Close()                 // kills qemu's process group, removes every temp file
//	... SSH to vm.SSHAddr(), host keys from vm.ConsoleOutput ...
//	vm.Powerdown(ctx) or a poweroff inside the guest; vm.Wait(ctx)
//	vm.Export(ctx, path, progress)  // flattened, compressed qcow2, atomically at path
//
// Acceleration is probed, not assumed (see AccelProbe): a /dev/kvm that
// exists is not enough, KVM is used only when a tiny real guest runs under
// it; otherwise TCG (software emulation). Only the host's architecture is
// run (x86_64 or aarch64); anything else is a usage error.
//
// Networking: a guest that is not Spec.Isolated gets passt (see passt.go),
// started and stopped with qemu, its socket in the VM's directory, run with
// --no-map-gw: the guest's connections leave through this host's network
// stack, but the host's loopback is out of its reach (qemu's slirp would
// map 10.0.2.2 to it). An isolated guest gets slirp with restrict=on: it
// reaches nothing at all. Either way the only way in is the SSH forward on
// 127.0.0.1; nothing here listens on any other address.
//
// Host tools: qemu-system-<arch>, qemu-img, genisoimage or xorriso, and
// passt unless isolated.
package qemu
