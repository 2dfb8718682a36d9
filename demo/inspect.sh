#!/usr/bin/env bash
# demo/inspect.sh - show, without booting it, what the demo build put in a runner image, and
# fail (exit 1) unless the demo script saw the secret (the digest it wrote into the image is
# the secret's) and the secret itself is nowhere on the disk, free blocks included.
# The secret comes on stdin: never on the command line or in the environment.
#
# Usage:  printf '%s' "$SECRET" | demo/inspect.sh IMAGE.qcow2
set -Eeuo pipefail

fail() {
	echo "demo: FAILED: $*" >&2
	exit 1
}
[ $# = 1 ] || {
	echo "usage: printf '%s' SECRET | demo/inspect.sh IMAGE.qcow2" >&2
	exit 2
}
OUT=$1
SECRET=$(cat)
[ -n "$SECRET" ] || fail "no secret on stdin: pass the one the build was given"

echo "== what is in $OUT (read with debugfs, not booted)" >&2
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
qemu-img convert -O raw "$OUT" "$WORK/disk.raw"
# The root file system is the first partition; debugfs reads it at its byte offset.
START=$(sfdisk --json "$WORK/disk.raw" | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"]["partitions"][0]["start"])')
dd if="$WORK/disk.raw" of="$WORK/root.ext4" bs=4M iflag=skip_bytes skip=$((START * 512)) status=none conv=sparse
for f in recipe built-at script token.sha256; do
	printf '/etc/runner-image/%-12s %s\n' "$f" "$(debugfs -R "cat /etc/runner-image/$f" "$WORK/root.ext4" 2>/dev/null)"
done
want=$(printf '%s' "$SECRET" | sha256sum | cut -d' ' -f1)
got=$(debugfs -R "cat /etc/runner-image/token.sha256" "$WORK/root.ext4" 2>/dev/null)
[ "$got" = "$want" ] ||
	fail "/etc/runner-image/token.sha256 in $OUT is not the secret's digest: the demo script did not see the secret (or the file is missing)"
echo "the script saw the secret (its digest matches)"
# The pattern comes from a file (never argv); NUL bytes become line ends so that grep
# holds short lines, not gigabytes of an empty disk as one line.
printf '%s\n' "$SECRET" >"$WORK/pattern"
# grep reads to the end (no -q): an early exit would kill tr, and pipefail would take
# that for "not found".
if tr '\0' '\n' <"$WORK/disk.raw" | grep -aFf "$WORK/pattern" >/dev/null; then
	fail "the secret is in the image"
fi
echo "the secret itself is nowhere on the disk, free blocks included"
