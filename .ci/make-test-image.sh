#!/usr/bin/env bash
# make-test-image.sh - build the integration tests' guest image: a small Debian 12 cloud
# image (cloud-init + sshd + sudo) made by debootstrap, as qcow2. Prints its path on stdout.
#
# The guest looks like an Ubuntu cloud image to the builder: cloud-init's default user is
# "ubuntu" with passwordless sudo, cloud-init reads only a config drive or a NoCloud seed
# (datasource_list [ConfigDrive, NoCloud, None]: it never probes a metadata address), and it
# prints the SSH host key fingerprints (ed25519, ecdsa) on the serial console.
#
# Cached: a stamp holds a hash of everything that shapes the image; a rerun with the same
# stamp only prints the path. Needs root and Debian's package mirror (the one apt uses).
#
# Environment:
#   GRIB_TEST_IMAGE_DIR  cache dir                    [/var/cache/grib-test-image]
#   GRIB_MIRROR          Debian mirror                [the first non-security URI apt uses]
#   GRIB_FORCE=1         rebuild even when the stamp matches
set -Eeuo pipefail

DIR=${GRIB_TEST_IMAGE_DIR:-/var/cache/grib-test-image}
IMAGE=$DIR/debian-12-grib-test.qcow2
STAMP=$DIR/debian-12-grib-test.stamp
SUITE=bookworm
DISK_MB=2048
T0=$(date +%s)

# Guest packages. locales: cloud-init's locale module fails the run without it.
# python3-cffi-backend: debootstrap ignores Provides:, python3-cryptography needs it.
GUEST_PKGS=linux-image-cloud-amd64,systemd-sysv,udev,dbus,locales,cloud-init,python3-cffi-backend,openssh-server,sudo,ifupdown,isc-dhcp-client,iproute2,netbase,cloud-guest-utils,e2fsprogs,grub-pc-bin
HOST_PKGS=(qemu-system-x86 qemu-utils debootstrap genisoimage e2fsprogs fdisk openssh-client)

log() { printf '[%4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}
[ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot)"

install_host_tools() {
  local missing=() p
  for p in "${HOST_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  log "installing host tools: ${missing[*]}"
  # Lock::Timeout: wait for another apt (e.g. openstack-up.sh's) instead of failing.
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q
    --no-install-recommends "${missing[@]}")
  "${apt[@]}" >/dev/null 2>&1 ||
    { apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null 2>&1 && "${apt[@]}" >/dev/null; } ||
    die "apt-get install ${missing[*]} failed"
}

mirror() {
  if [ -n "${GRIB_MIRROR:-}" ]; then
    echo "$GRIB_MIRROR"
    return
  fi
  local m=""
  [ -r /etc/apt/sources.list.d/debian.sources ] &&
    m=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  [ -z "$m" ] && [ -r /etc/apt/sources.list ] &&
    m=$(awk '$1=="deb" && $0 !~ /security/ {for (i=2;i<=NF;i++) if ($i ~ /^https?:\/\//) {print $i; exit}}' /etc/apt/sources.list)
  [ -n "$m" ] || die "no Debian mirror in apt's sources; set GRIB_MIRROR"
  echo "$m"
}

# stamp: changes whenever the package list, the size or the build code changes.
stamp() {
  { echo "$SUITE $DISK_MB $GUEST_PKGS"; sed -n '/^configure_rootfs()/,/^}/p;/^assemble_disk()/,/^}/p' "$0"; } |
    sha256sum | cut -c1-16
}

configure_rootfs() { # ROOTFS UUID
  local r=$1 uuid=$2
  echo "UUID=$uuid / ext4 defaults,errors=remount-ro 0 1" >"$r/etc/fstab"
  echo localhost >"$r/etc/hostname"
  printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' >"$r/etc/hosts"
  rm -f "$r"/etc/ssh/ssh_host_* # made per instance by cloud-init
  : >"$r/etc/machine-id"        # made on first boot
  rm -f "$r/var/lib/dbus/machine-id"
  echo 'en_US.UTF-8 UTF-8' >"$r/etc/locale.gen"
  chroot "$r" locale-gen >/dev/null
  echo 'LANG=en_US.UTF-8' >"$r/etc/default/locale" # cloud-init's default: nothing left to do

  cat >"$r/etc/cloud/cloud.cfg.d/90_grib_test_image.cfg" <<'EOF'
# Integration-test guest (github-runner-image-builder .ci/make-test-image.sh).
# Only a config drive or a NoCloud seed: never probe a metadata address.
datasource_list: [ConfigDrive, NoCloud, None]
# Like Ubuntu cloud images: the default user is "ubuntu" with passwordless sudo.
system_info:
  default_user:
    name: ubuntu
    gecos: Ubuntu
    groups: [adm, sudo]
    sudo: ["ALL=(ALL) NOPASSWD:ALL"]
    shell: /bin/bash
    lock_passwd: true
# RSA host keys cost ~13 s under TCG; ed25519 and ecdsa only.
ssh_genkeytypes: [ed25519, ecdsa]
ssh_deletekeys: true
# cloud-init writes the host key fingerprints to the console (keys_to_console).
ssh_fp_console_blacklist: []
ssh_key_console_blacklist: []
# sudo must resolve the instance's host name.
manage_etc_hosts: true
EOF
  grep -q 'keys[-_]to[-_]console' "$r/etc/cloud/cloud.cfg" || die "cloud.cfg has no keys_to_console module"

  # Faster boot: nothing periodic, no waiting for a network that will not come.
  local unit
  for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
    fstrim.timer systemd-networkd-wait-online.service; do
    chroot "$r" systemctl mask "$unit" >/dev/null 2>&1 || true
  done

  # GRUB for BIOS, assembled by hand (no grub-install, no loop device).
  mkdir -p "$r/boot/grub"
  cp -a "$r/usr/lib/grub/i386-pc" "$r/boot/grub/"
  cat >"$r/boot/grub/grub.cfg" <<EOF
set default=0
set timeout=0
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
menuentry 'Debian GNU/Linux (grib test image)' {
  search --no-floppy --fs-uuid --set=root $uuid
  linux /vmlinuz root=UUID=$uuid ro console=tty0 console=ttyS0,115200n8
  initrd /initrd.img
}
EOF
  chroot "$r" grub-mkimage -O i386-pc -d /usr/lib/grub/i386-pc -o /tmp/core.img \
    -p '(hd0,msdos1)/boot/grub' biosdisk part_msdos ext2 search_fs_uuid normal configfile linux
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/cache/apt/*.bin "$r"/var/lib/apt/lists/* \
    "$r"/var/log/*.log "$r"/var/log/apt/* || true
}

assemble_disk() { # WORK UUID OUT
  local w=$1 uuid=$2 out=$3 r=$1/rootfs
  mv "$r/tmp/core.img" "$w/core.img"
  [ "$(stat -c %s "$w/core.img")" -lt $((2047 * 512)) ] || die "GRUB core.img does not fit before 1 MiB"
  cp "$r/usr/lib/grub/i386-pc/boot.img" "$w/boot.img"
  # ext4 populated from the directory: no mount needed.
  truncate -s "$((DISK_MB - 1))M" "$w/root.ext4"
  mkfs.ext4 -q -F -L rootfs -U "$uuid" -d "$r" "$w/root.ext4"
  # MBR disk: one bootable partition at 1 MiB; GRUB's boot.img in the MBR, core.img after it.
  truncate -s "${DISK_MB}M" "$w/disk.raw"
  printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$w/disk.raw"
  dd if="$w/root.ext4" of="$w/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
  dd if="$w/boot.img" of="$w/disk.raw" bs=440 count=1 conv=notrunc status=none
  dd if="$w/core.img" of="$w/disk.raw" bs=512 seek=1 conv=notrunc status=none
  qemu-img convert -f raw -O qcow2 "$w/disk.raw" "$out"
}

build() {
  local w=$DIR/work uuid m t
  m=$(mirror)
  rm -rf "$w"
  mkdir -p "$w" "$DIR/debs"
  t=$(date +%s)
  log "debootstrap $SUITE from $m"
  debootstrap --variant=minbase --cache-dir="$DIR/debs" --include="$GUEST_PKGS" \
    "$SUITE" "$w/rootfs" "$m" >"$w/debootstrap.log" 2>&1 || {
    tail -20 "$w/debootstrap.log" >&2
    tail -20 "$w/rootfs/debootstrap/debootstrap.log" >&2 2>/dev/null || true
    die "debootstrap failed"
  }
  log "debootstrap took $(($(date +%s) - t))s"
  if [ ! -e "$w/rootfs/vmlinuz" ] || [ ! -e "$w/rootfs/initrd.img" ]; then
    die "no kernel or initrd in the rootfs"
  fi
  uuid=$(cat /proc/sys/kernel/random/uuid)
  configure_rootfs "$w/rootfs" "$uuid"
  assemble_disk "$w" "$uuid" "$IMAGE.tmp"
  mv "$IMAGE.tmp" "$IMAGE"
  rm -rf "$w"
  stamp >"$STAMP"
  log "built $IMAGE ($(du -h "$IMAGE" | cut -f1) on disk, $DISK_MB MiB virtual) in $(($(date +%s) - T0))s"
}

install_host_tools
mkdir -p "$DIR"
if [ "${GRIB_FORCE:-0}" != 1 ] && [ -s "$IMAGE" ] && [ -s "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp)" ]; then
  log "test image up to date ($(($(date +%s) - T0))s)"
else
  rm -f "$IMAGE" "$STAMP"
  build
fi
echo "$IMAGE"
