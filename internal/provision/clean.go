package provision

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/runner-image-builder/github-runner-image-builder/internal/errs"
)

// removeKeyCommand removes every line holding the key blob $1 from user
// $2's authorized_keys and from the file $3 (root's authorized_keys, where
// cloud-init copies the key too), keeping each file's owner and mode. The
// blob is a public key: not a secret.
const removeKeyCommand = `set -eu
home=$(getent passwd "$2" | cut -d: -f6) || home=
for f in "$3" ${home:+"$home/.ssh/authorized_keys"}; do
  [ -f "$f" ] || continue
  if grep -vF -- "$1" "$f" > "$f.grib-tmp"; then :; elif [ $? -ne 1 ]; then rm -f "$f.grib-tmp"; exit 1; fi
  cat "$f.grib-tmp" > "$f"
  rm -f "$f.grib-tmp"
done`

const rootAuthorizedKeys = "/root/.ssh/authorized_keys"

// removeHostKeysCommand removes the guest's SSH host keys (the build's
// generated key, which the user-data carried) and cloud-init's per-instance
// files (its copies of that user-data), overwriting each first so the
// image's free blocks do not keep the private key. The image's first boot is
// a new instance to cloud-init, whose ssh module then makes fresh host keys.
const removeHostKeysCommand = `set -eu
find /etc/ssh -maxdepth 1 -type f -name 'ssh_host_*' -exec shred -u -- {} +
if [ -d /var/lib/cloud/instances ]; then
  find /var/lib/cloud/instances -xdev -type f -exec shred -u -- {} +
fi`

// Clean prepares the guest to be snapshotted as an image: it resets
// cloud-init so the image boots as a new instance (logs, seed, machine-id
// and the config cloud-init generated, as far as the guest's cloud-init
// supports it), removes the builder's key from authorized_keys (consumers
// such as GARM inject their own), removes the SSH host keys (the first boot
// of the image makes new ones) and pushed scripts, and syncs. A dead
// connection is redialled before it starts; once the key is removed, no
// redial can log in.
func (g *Guest) Clean(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultCommandTimeout)
	defer cancel()
	if err := g.ensureConnected(ctx); err != nil {
		return connectFailed(ctx, fmt.Sprintf("cleaning the guest %s", g.addr), err)
	}
	steps := []struct {
		what string
		do   func(context.Context) error
	}{
		{"removing temporary files", g.removeAllTemp},
		{"removing the builder's SSH key", g.removeBuilderKey},
		{"removing the SSH host keys", func(ctx context.Context) error {
			return g.sudoRun(ctx, "/bin/sh -c "+shellQuote(removeHostKeysCommand)+" grib-clean-host-keys")
		}},
		{"resetting cloud-init", g.cleanCloudInit},
		// The files removed (the host key, cloud-init's copies of the
		// user-data) leave their old contents in free blocks: discard them
		// where the disk lets the guest (qemu's discard=unmap). Best effort.
		{"discarding free blocks", g.discardFreeBlocks},
		{"syncing disks", func(ctx context.Context) error { return g.sudoRun(ctx, "sync") }},
	}
	for _, s := range steps {
		if err := s.do(ctx); err != nil {
			if ctx.Err() != nil {
				return ctxError(ctx, fmt.Sprintf("cleaning the guest %s", g.addr))
			}
			return errs.Wrap(errs.KindBuild, err, "cleaning the guest %s: %s", g.addr, s.what)
		}
	}
	return nil
}

// zeroFreeSpaceCommand fills the free space of every local file system
// with zeros and frees it again, for disks that do not pass discards: the
// snapshot then holds zeros (which qcow2 and Glance's stores keep small)
// where deleted files were. dd ends with "No space left", which is the
// point; the file is removed whatever happens.
const zeroFreeSpaceCommand = `set -u
findmnt -rn -o TARGET,FSTYPE | while read -r target fstype; do
  case "$fstype" in ext2|ext3|ext4|xfs|btrfs|vfat) ;; *) continue ;; esac
  f="${target%/}/.grib-zero-free-space"
  dd if=/dev/zero of="$f" bs=1M status=none 2>/dev/null || :
  sync
  rm -f "$f"
  echo "zeroed the free space of $target"
done
sync`

// ZeroFreeSpace writes zeros over the free space of the guest's file
// systems (before Clean, whose fstrim then discards them where it can).
// It reads and writes the whole free space once: minutes on a large disk.
func (g *Guest) ZeroFreeSpace(ctx context.Context) error {
	if err := g.ensureConnected(ctx); err != nil {
		return connectFailed(ctx, fmt.Sprintf("zeroing the free space of the guest %s", g.addr), err)
	}
	stdout, stderr, err := g.output(ctx, g.sudo+" /bin/sh -c "+shellQuote(zeroFreeSpaceCommand)+" grib-zero", nil)
	if err != nil {
		if ctx.Err() != nil {
			return ctxError(ctx, fmt.Sprintf("zeroing the free space of the guest %s", g.addr))
		}
		return errs.Wrap(errs.KindBuild, err, "zeroing the free space of the guest %s: %s", g.addr, firstLine(string(bytes.TrimSpace(stderr))))
	}
	g.log.Info("free space zeroed", "output", strings.Join(strings.Fields(string(stdout)), " "))
	return nil
}

// fstrimCommand discards the free blocks of every mounted file system
// that supports it, so that deleted files do not travel in the snapshot.
const fstrimCommand = "fstrim --all --verbose"

// discardFreeBlocks runs fstrim. A disk that does not pass discards (the
// hypervisor's choice) makes it fail: that costs image size, not
// correctness, so it is logged and the cleaning goes on.
func (g *Guest) discardFreeBlocks(ctx context.Context) error {
	stdout, stderr, err := g.output(ctx, g.sudo+" "+fstrimCommand, nil)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		g.log.Warn("fstrim failed: free blocks were not discarded and may travel in the image (the disk may not pass discards)",
			"error", err, "stderr", firstLine(string(bytes.TrimSpace(stderr))))
		return nil
	}
	g.log.Info("free blocks discarded", "fstrim", strings.Join(strings.Fields(string(stdout)), " "))
	return nil
}

// cloudInitCleanArgs picks the `cloud-init clean` flags the guest's
// cloud-init supports, from its --help text.
func cloudInitCleanArgs(help string) (args string, machineIDFlag bool) {
	args = "--logs --seed"
	if strings.Contains(help, "--machine-id") {
		args += " --machine-id"
		machineIDFlag = true
	}
	if strings.Contains(help, "--configs") {
		args += " --configs all"
	}
	return args, machineIDFlag
}

func (g *Guest) cleanCloudInit(ctx context.Context) error {
	help, stderr, err := g.output(ctx, "cloud-init clean --help", nil)
	if err != nil {
		return fmt.Errorf("cloud-init clean --help: %w: %s", err, bytes.TrimSpace(stderr))
	}
	args, machineIDFlag := cloudInitCleanArgs(string(help))
	if err := g.sudoRun(ctx, "cloud-init clean "+args); err != nil {
		return err
	}
	if !machineIDFlag {
		// Older cloud-init: an empty machine-id makes systemd generate a new
		// one at the next boot, like --machine-id does.
		return g.sudoRun(ctx, "truncate -s 0 /etc/machine-id")
	}
	return nil
}

func (g *Guest) removeBuilderKey(ctx context.Context) error {
	g.connMu.Lock()
	g.keyRemoved = true // from now on a new login may fail
	g.connMu.Unlock()
	blob := base64.StdEncoding.EncodeToString(g.key.Marshal())
	return g.sudoRun(ctx, fmt.Sprintf("/bin/sh -c %s grib-clean %s %s %s",
		shellQuote(removeKeyCommand), shellQuote(blob), shellQuote(g.user), shellQuote(rootAuthorizedKeys)))
}

func (g *Guest) removeAllTemp(ctx context.Context) error {
	g.mu.Lock()
	dirs := append([]string(nil), g.tempDirs...)
	g.mu.Unlock()
	if len(dirs) == 0 {
		return nil
	}
	quoted := make([]string, len(dirs))
	for i, d := range dirs {
		quoted[i] = shellQuote(d)
	}
	if err := g.sudoRun(ctx, "rm -rf -- "+strings.Join(quoted, " ")); err != nil {
		return err
	}
	g.mu.Lock()
	g.tempDirs = nil
	g.mu.Unlock()
	return nil
}

// sudoRun runs cmd as root; a failure carries its stderr.
func (g *Guest) sudoRun(ctx context.Context, cmd string) error {
	_, stderr, err := g.output(ctx, g.sudo+" "+cmd, nil)
	if err != nil {
		return fmt.Errorf("%s: %w: %s", firstLine(cmd), err, bytes.TrimSpace(stderr))
	}
	return nil
}

// PowerOff asks the guest to shut down and closes the connection. The guest
// dropping the connection counts as success; the caller then waits for the
// VM to stop (Nova SHUTOFF, or the qemu process exiting). A dead connection
// is redialled first, unless Clean already removed the builder's key.
func (g *Guest) PowerOff(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultCommandTimeout)
	defer cancel()
	defer g.Close()
	if err := g.ensureConnected(ctx); err != nil {
		return connectFailed(ctx, fmt.Sprintf("powering off %s", g.addr), err)
	}
	_, stderr, err := g.output(ctx, g.sudo+" /bin/sh -c 'systemctl poweroff || shutdown -h now'", nil)
	if err == nil || droppedByShutdown(err) {
		g.log.Debug("guest powering off")
		return nil
	}
	if ctx.Err() != nil {
		return ctxError(ctx, fmt.Sprintf("powering off %s", g.addr))
	}
	return errs.Wrap(errs.KindBuild, err, "powering off %s: %s", g.addr, bytes.TrimSpace(stderr))
}

// droppedByShutdown reports whether err is the connection going away after
// the command started: no exit status, or the shell killed by a signal.
func droppedByShutdown(err error) bool {
	if errors.Is(err, errSessionNotStarted) {
		return false
	}
	var missing *ssh.ExitMissingError
	var exit *ssh.ExitError
	switch {
	case errors.As(err, &missing), errors.Is(err, io.EOF):
		return true
	case errors.As(err, &exit):
		return exit.Signal() != ""
	default:
		return false
	}
}
