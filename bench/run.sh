#!/usr/bin/env bash
# Runs the benchmarks of bench/README.md against the test OpenStack
# (.ci/openstack-up.sh) and prints one table. Not part of .ci/run.
# As root; another user with sudo is re-run through it.
#
#   bench/run.sh                               # 256 MiB and 1 GiB copies, the rest once
#   GRIB_BENCH_SIZES=256MiB,1GiB,4GiB bench/run.sh
#   GRIB_BENCH_ONLY=Orchestration bench/run.sh
#
# GRIB_BENCH_ONLY: Copy, Orchestration, ParallelMatrix, LocalBoot or an
# alternation of them (default all); GRIB_BENCH_TIME: go test -benchtime
# (default 1x).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The test OpenStack and its clouds.yaml are root's: a user with sudo is
# re-run through it (keeping the GRIB_* settings); root needs no sudo.
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null || {
		echo "bench/run.sh: needs root (the test OpenStack and its clouds.yaml are root's): run it as root, or install sudo" >&2
		exit 2
	}
	exec sudo --preserve-env=GRIB_BENCH_SIZES,GRIB_BENCH_ONLY,GRIB_BENCH_TIME,GRIB_IT_CLOUDS,GRIB_TEST_IMAGE,GRIB_TEST_IMAGE_DIR -- bash "$PWD/bench/run.sh" "$@"
fi
export PATH=/usr/local/go/bin:$PATH
clouds="${GRIB_IT_CLOUDS:-/var/lib/grib-openstack/clouds.yaml}"
if [ ! -r "$clouds" ]; then
	echo "bench/run.sh: $clouds is missing: start the test OpenStack with .ci/openstack-up.sh" >&2
	exit 2
fi

export GRIB_BENCH=1 GRIB_IT=1
export GRIB_BENCH_SIZES="${GRIB_BENCH_SIZES:-256MiB,1GiB}"
only="${GRIB_BENCH_ONLY:-Copy|Orchestration|ParallelMatrix|LocalBoot}"
benchtime="${GRIB_BENCH_TIME:-1x}"

raw="$(mktemp)"
trap 'rm -f "$raw"' EXIT

echo "bench/run.sh: sizes $GRIB_BENCH_SIZES, benchmarks $only, benchtime $benchtime" >&2
go test -run '^$' -bench "^Benchmark(${only})\$" -benchtime "$benchtime" -timeout 180m \
	./internal/builder/ 2>&1 | tee "$raw" >&2

echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m)"
awk '
# value of metric unit u on a benchmark line, or "-"
function metric(u,   i) {
	for (i = 3; i < NF; i += 2) if ($(i + 1) == u) return $i
	return "-"
}
/^BenchmarkCopy\// {
	split($1, p, "/"); sub(/^size=/, "", p[2]); sub(/^clouds=/, "", p[3]); sub(/-[0-9]+$/, "", p[4])
	k = p[2] SUBSEP p[3]
	if (!(k in seen)) { seen[k] = 1; order[++n] = k }
	wall[k, p[4]] = metric("wall-s"); rss[k, p[4]] = metric("peak-rss-MiB"); dl[k, p[4]] = metric("download-s")
}
/^BenchmarkOrchestration/ { ov = metric("overhead-s"); calls = metric("api-calls") }
/^BenchmarkParallelMatrix/ { pm1 = metric("one-cell-s"); pm4 = metric("four-cells-s"); pmr = metric("four/one"); pmp = metric("parallelism") }
/step times:/ { steps = $0; sub(/.*step times: /, "", steps) }
/^BenchmarkLocalBoot/ { bare = metric("bare-boot-s"); ci = metric("cloud-init-done-s"); lag = metric("notice-lag-s") }
/accelerator/ { accel = $0; sub(/.*accelerator /, "", accel); sub(/ .*/, "", accel) }
END {
	if (n > 0) {
		printf "\n%-8s %-6s %12s %12s %9s %10s %10s %10s %10s\n", "size", "clouds", "ours wall s", "base wall s", "ours/base", "ours RSS", "base RSS", "ours dl s", "base dl s"
		for (i = 1; i <= n; i++) {
			split(order[i], kk, SUBSEP); k = order[i]
			ratio = (wall[k, "baseline"] + 0 > 0) ? sprintf("%.2f", wall[k, "ours"] / wall[k, "baseline"]) : "-"
			printf "%-8s %-6s %12s %12s %9s %10s %10s %10s %10s\n", kk[1], kk[2], wall[k, "ours"], wall[k, "baseline"], ratio, rss[k, "ours"], rss[k, "baseline"], dl[k, "ours"], dl[k, "baseline"]
		}
		print "(RSS in MiB: peak resident set of the process doing the copy)"
	}
	if (ov != "") {
		printf "\norchestration per guest-less build: %s s, %s API calls\n", ov, calls
		if (steps != "") print "  steps: " steps
	}
	if (pm1 != "") {
		printf "\nservice build, guest-less: one cell %s s, four cells %s s (parallelism %s): four/one %s\n", pm1, pm4, pmp, pmr
	}
	if (bare != "") {
		printf "\nlocal builder (%s): qemu start to login prompt %s s; to cloud-init done as seen by the builder %s s\n", accel, bare, ci
		printf "  the builder noticed cloud-init finish %s s after the console showed it\n", lag
	}
}' "$raw"
