#!/bin/bash
# A small test recipe: stands in for the built-in one in dry-run goldens.
set -euo pipefail
echo recipe-ran > /var/lib/test-recipe-marker
