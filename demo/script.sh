#!/bin/bash
# The demo's --script-url script: run as root in the guest after cloud-init. Secrets
# arrive as environment variables (IMAGE_BUILDER_SECRET_ prefix removed), passed on
# the SSH session's stdin; they must never land on the disk, so only a digest is kept.
set -euo pipefail
mkdir -p /etc/runner-image
printf '%s' "$DEMO_TOKEN" | sha256sum | cut -d' ' -f1 >/etc/runner-image/token.sha256
echo "demo script ran on $(hostname)" >/etc/runner-image/script
