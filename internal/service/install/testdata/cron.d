# Managed by github-runner-image-builder setup: edits are overwritten.
# Build GitHub runner images of grib (100% automatic), every 6h.
0 */6 * * * root umask 077; OS_CLIENT_CONFIG_FILE=/etc/github-runner-image-builder/clouds.yaml XDG_STATE_HOME=/var/lib ODD='a"b$c\%d'\''e' exec /usr/local/bin/github-runner-image-builder build --config '/etc/grib/my config.yaml' >>/var/log/github-runner-image-builder/grib.log 2>&1
