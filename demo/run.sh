#!/usr/bin/env bash
# demo/run.sh - the main job on a fresh Debian 12 machine that reaches only its package
# mirror: build the tool, build a small Debian cloud image by debootstrap (the tests'
# guest image; an Ubuntu cloud image needs the internet), and turn it into a runner image
# with the local builder: qemu on this host, the demo recipe as user-data, the demo
# script (with a secret) pushed over SSH, the demo verification, a qcow2 out. Then it
# shows, without booting the image, what the build put in it and that the secret is not.
#
# Usage:  bash demo/run.sh [OUTPUT.qcow2]   (as root, or as a user with sudo: debootstrap and apt need root)
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${1:-$PWD/out/demo-runner.qcow2}
export PATH=/usr/local/go/bin:$PATH
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null || {
		echo "demo: needs root (debootstrap and apt): run it as root, or install sudo" >&2
		exit 2
	}
	exec sudo -- bash "$PWD/demo/run.sh" "$@"
fi

# python3 serves the demo script on loopback; fdisk reads the image's partition table;
# passt is the local builder's guest network without --isolated (this demo is isolated).
# A fresh machine may have no package lists yet: update them when the install fails.
missing=()
for p in python3 fdisk passt; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}")
	"${apt[@]}" >/dev/null 2>&1 || { apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null && "${apt[@]}" >/dev/null; } || {
		echo "demo: apt-get install ${missing[*]} failed" >&2
		exit 1
	}
fi

echo "== building the tool" >&2
go build -o bin/github-runner-image-builder ./cmd/github-runner-image-builder

echo "== building the base image (debootstrap; cached after the first run)" >&2
BASE=$(.ci/make-test-image.sh)

# The script is served to the builder host on loopback; the host pushes it over SSH.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory demo "$PORT" >/dev/null 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
	(: </dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break
	sleep 0.1
done

mkdir -p "$(dirname "$OUT")"
SECRET=$(head -c 18 /dev/urandom | base64)
echo "== building $OUT with the local builder (a guest boot under qemu takes a minute or two)" >&2
IMAGE_BUILDER_SECRET_DEMO_TOKEN=$SECRET bin/github-runner-image-builder run demo-runner \
	--builder local --arch x64 --isolated --base-image-file "$BASE" \
	--user-data demo/recipe.yaml --skip-default-checks --verify-script demo/verify.sh \
	--script-url "http://127.0.0.1:$PORT/script.sh" --output "$OUT"
echo >&2

# Fails the demo unless the script saw the secret and the secret is not in the image.
printf '%s' "$SECRET" | demo/inspect.sh "$OUT"
echo "runner image: $OUT"
