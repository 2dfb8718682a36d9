#!/bin/bash
# github-runner-image-builder recipe: turns an Ubuntu 22.04 (jammy) cloud image
# into a GitHub Actions runner image for arch s390x. Nothing confidential is in it (user-data
# stays in the image; the operator's script and its inputs run later over SSH). Any failure exits
# non-zero.
set -Eeuo pipefail

readonly BASE='jammy'
readonly NATIVE_ARCH='s390x'
readonly RUNNER_ARCH='s390x'
readonly RUNNER_REPO='canonical/github-actions-runner'
readonly RUNNER_VERSION='2.330.0'
readonly RUNNER_URL='https://github.com/canonical/github-actions-runner/releases/download/v2.330.0/actions-runner-linux-s390x-2.330.0.tar.gz'
readonly RUNNER_SHA256='0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'
readonly RUNNER_DIR='/home/ubuntu/actions-runner'
readonly YQ_VERSION='4.45.1'
readonly YQ_URL="https://github.com/mikefarah/yq/releases/download/v${YQ_VERSION}/"'yq_linux_s390x'
readonly YQ_SHA384='0d1cf3e526f726fc03563416195b68dc487b6bbb4d426c1766d313432f9289d098190dac2c0dd242aaac42270d683f00'
readonly APT_PACKAGES=(
	'build-essential'
	'cargo'
	'docker.io'
	'gh'
	'jq'
	'npm'
	'pkg-config'
	'python-is-python3'
	'python3-dev'
	'python3-pip'
	'rustc'
	'shellcheck'
	'socat'
	'tar'
	'time'
	'unzip'
	'wget'
	'dotnet-runtime-8.0'
)

export DEBIAN_FRONTEND=noninteractive
export NEEDRESTART_MODE=a

log() {
	printf '%s github-runner-image-builder: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"
}

on_error() {
	log "FAILED with exit code $1 at line $2: $3"
}
trap 'on_error "$?" "$LINENO" "$BASH_COMMAND"' ERR

# retry CMD...: runs one simple command up to 5 times, waiting 5, 10, 20, 40 s between tries.
retry() {
	local attempt=1 delay=5
	until "$@"; do
		if ((attempt >= 5)); then
			log "giving up after ${attempt} attempts: $*"
			return 1
		fi
		log "attempt ${attempt} failed, retrying in ${delay}s: $*"
		sleep "${delay}"
		attempt=$((attempt + 1))
		delay=$((delay * 2))
	done
}

apt_get() {
	apt-get -y -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}

# download URL FILE: fails on HTTP errors; curl retries transient ones with backoff.
download() {
	curl -fsSL --retry 3 --retry-connrefused --connect-timeout 30 --max-time 1800 -o "$2" "$1"
}

check_base() {
	log "step: check the base image is ubuntu ${BASE} on ${NATIVE_ARCH}"
	local codename arch
	codename=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release | tr -d '"')
	arch=$(dpkg --print-architecture)
	if [[ "${codename}" != "${BASE}" || "${arch}" != "${NATIVE_ARCH}" ]]; then
		log "this recipe is for ubuntu ${BASE} on ${NATIVE_ARCH}, but the image is ${codename} on ${arch}"
		return 1
	fi
}

set_hostname() {
	log "step: set the hostname to github-runner"
	hostnamectl set-hostname github-runner
}

configure_proxy() {
	log "step: install the aproxy snap (no proxy given: left unconfigured)"
	retry snap install aproxy --edge
}

disable_unattended_upgrades() {
	log "step: disable unattended upgrades"
	local unit
	for unit in apt-daily.timer apt-daily.service apt-daily-upgrade.timer apt-daily-upgrade.service; do
		if systemctl cat "${unit}" >/dev/null 2>&1; then
			systemctl disable --now "${unit}"
		fi
	done
	retry apt_get remove unattended-upgrades
}

install_apt_packages() {
	log "step: upgrade and install apt packages"
	retry apt_get update
	retry apt_get upgrade
	retry apt_get install --no-install-recommends "${APT_PACKAGES[@]}"
}

enable_network_fair_queuing_congestion() {
	log "step: enable fq queueing and bbr congestion control"
	cat >/etc/sysctl.d/60-github-runner-network.conf <<'EOF'
net.core.default_qdisc=fq
net.ipv4.tcp_congestion_control=bbr
EOF
	sysctl -p /etc/sysctl.d/60-github-runner-network.conf
}

configure_usr_local_bin() {
	log "step: make /usr/local/bin writable by all, as on GitHub-hosted runners"
	chmod 777 /usr/local/bin
}

install_yarn() {
	log "step: install yarn"
	retry npm install --global yarn
	npm cache clean --force
}

install_yq() {
	log "step: install yq ${YQ_VERSION} (pinned binary, SHA-384 checked)"
	local dir
	dir=$(mktemp -d)
	retry download "${YQ_URL}" "${dir}/yq"
	if ! echo "${YQ_SHA384}  ${dir}/yq" | sha384sum -c --strict -; then
		log "yq from ${YQ_URL} does not match its pinned SHA-384 ${YQ_SHA384}"
		return 1
	fi
	install -m 0755 "${dir}/yq" /usr/bin/yq
	rm -rf "${dir}"
	yq --version
}

install_opentelemetry_collector() {
	log "step: install the opentelemetry-collector snap (disabled)"
	retry snap install opentelemetry-collector --stable
	snap disable opentelemetry-collector
}

configure_system_users() {
	log "step: configure the ubuntu user and its GARM alias runner"
	if ! id -u ubuntu >/dev/null 2>&1; then
		useradd --create-home --shell /bin/bash ubuntu
	fi
	local rc line="PATH=\$PATH:/home/ubuntu/.local/bin"
	for rc in /home/ubuntu/.profile /home/ubuntu/.bashrc; do
		grep -qxF "${line}" "${rc}" 2>/dev/null || echo "${line}" >>"${rc}"
	done
	groupadd -f microk8s
	groupadd -f docker
	groupadd -f lxd
	usermod --append --groups docker,microk8s,lxd,sudo ubuntu
	# snapd needs the user's cgroup and /run/user/<uid> when jobs run snaps.
	loginctl enable-linger ubuntu
	# GARM runs its runner as "runner" in /home/runner/actions-runner: alias ubuntu.
	if ! id -u runner >/dev/null 2>&1; then
		useradd --non-unique --uid "$(id -u ubuntu)" --gid "$(id -g ubuntu)" --home-dir /home/ubuntu \
			--no-create-home --shell /bin/bash --groups docker,microk8s,lxd,sudo runner
	fi
	if [[ -d /home/runner && ! -L /home/runner ]]; then
		if [[ -n "$(ls -A /home/runner)" ]]; then
			log "/home/runner is a non-empty directory: cannot make it a link to /home/ubuntu"
			return 1
		fi
		rmdir /home/runner
	fi
	ln -sfnT /home/ubuntu /home/runner
}

install_github_runner() {
	log "step: install the runner ${RUNNER_VERSION} (${RUNNER_ARCH}) from ${RUNNER_REPO}"
	local tarball
	tarball=$(mktemp --suffix=.tar.gz)
	retry download "${RUNNER_URL}" "${tarball}"
	if ! echo "${RUNNER_SHA256}  ${tarball}" | sha256sum -c --strict -; then
		log "the runner tarball from ${RUNNER_URL} does not match SHA-256 ${RUNNER_SHA256}"
		return 1
	fi
	rm -rf "${RUNNER_DIR}"
	mkdir -p "${RUNNER_DIR}"
	tar -xzf "${tarball}" -C "${RUNNER_DIR}"
	rm -f "${tarball}"
	if [[ ! -x "${RUNNER_DIR}/config.sh" ]]; then
		log "the runner tarball has no config.sh"
		return 1
	fi
	chown --recursive ubuntu:ubuntu /home/ubuntu/
}

clean_up() {
	log "step: clean apt caches, lists and logs"
	apt-get clean
	rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /root/.npm /root/.cache
	find /var/log -type f \( -name '*.gz' -o -name '*.[0-9]' -o -name '*.old' \) -delete
	find /var/log/apt -type f -exec truncate --size=0 {} +
	local f
	for f in /var/log/dpkg.log /var/log/alternatives.log; do
		if [[ -f "${f}" ]]; then
			truncate --size=0 "${f}"
		fi
	done
	if command -v journalctl >/dev/null; then
		journalctl --rotate
		journalctl --vacuum-time=1s
	fi
}

main() {
	log "start: runner ${RUNNER_VERSION} (${RUNNER_ARCH}) on ubuntu ${BASE} (${NATIVE_ARCH})"
	check_base
	set_hostname
	configure_proxy
	disable_unattended_upgrades
	install_apt_packages
	enable_network_fair_queuing_congestion
	configure_usr_local_bin
	install_yarn
	install_yq
	install_opentelemetry_collector
	configure_system_users
	install_github_runner
	clean_up
	log "done: the image is ready"
}

main "$@"
