#!/usr/bin/env bash
# openstack-down.sh - stop what .ci/openstack-up.sh started, by its PID files (never by
# process name). Each service was started with setsid, so its PID is its process-group id
# and the whole group (uwsgi workers, qemu guests of nova-compute) gets the signal.
# Before signalling, it records every process of a service (its group, its session and
# its descendants, with their start times) so that a child that left the group is ended
# too, by PID. PostgreSQL is stopped only if openstack-up.sh started it. Afterwards it
# checks that none of those processes and no test guest is left, and fails if one is.
#
#   GRIB_OSL_DIR   state dir of openstack-up.sh       [/var/lib/grib-openstack]
#   GRIB_PURGE=1   also drop the databases and delete the state dir (next up = new cloud)
set -uo pipefail

DIR=${GRIB_OSL_DIR:-/var/lib/grib-openstack}
RUN=$DIR/run
DATABASES="keystone glance placement nova_api nova nova_cell0 neutron"
T0=$(date +%s)
rc=0
stopped_groups=() # pgid:name
owned=()          # pid:start:name of every process stopped

log() { printf '[%4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }

[ "$(id -u)" = 0 ] || {
  log "ERROR: run as root"
  exit 1
}

# starttime PID: the start time of a live process (field 22 of /proc/PID/stat), which
# tells it apart from a later process that reuses its PID. Fails for a zombie (dead,
# waiting to be reaped) and for a PID that is gone.
starttime() {
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  s=${s##*) } # fields from 3 on; the command name (field 2) may hold spaces
  # shellcheck disable=SC2086
  set -- $s
  [ "$1" != Z ] || return 1
  echo "${20}"
}

# group_alive PGID: is any live (not zombie) process of the group still there?
group_alive() {
  local p
  for p in $(pgrep -g "$1"); do
    starttime "$p" >/dev/null && return 0
  done
  return 1
}

# members PID: PID, its descendants, its process group and its session (a child that
# moved to its own group or session is still a descendant while its parent lives).
members() {
  local queue=("$1") p
  {
    pgrep -g "$1"
    pgrep -s "$1"
    while [ ${#queue[@]} -gt 0 ]; do
      p=${queue[0]}
      queue=("${queue[@]:1}")
      echo "$p"
      # shellcheck disable=SC2207
      queue+=($(pgrep -P "$p"))
    done
  } | sort -un
}

# still PID:START - is that very process still alive?
still() { [ "$(starttime "${1%%:*}" 2>/dev/null)" = "${1#*:}" ]; }

# signal_left SIG ENTRY...: send SIG to those of the recorded processes still alive.
signal_left() {
  local sig=$1 e
  shift
  for e in "$@"; do
    still "$e" && kill "-$sig" "${e%%:*}" 2>/dev/null
  done
  return 0
}

any_left() { # ENTRY...: is one of them alive?
  local e
  for e in "$@"; do
    still "$e" && return 0
  done
  return 1
}

# stop_service NAME: record every process of the service (group, session, descendants),
# TERM them, wait up to 20 s, then KILL what is left, by PID.
stop_service() {
  local name=$1 f=$RUN/$1.pid pid t0 p st _
  local mine=()
  [ -s "$f" ] || return 0
  pid=$(cat "$f")
  t0=$(date +%s)
  for p in $(members "$pid"); do
    st=$(starttime "$p") && mine+=("$p:$st")
  done
  if [ ${#mine[@]} -gt 0 ]; then
    kill -TERM -- "-$pid" 2>/dev/null
    signal_left TERM "${mine[@]}"
    for _ in $(seq 40); do
      group_alive "$pid" || any_left "${mine[@]}" || break
      sleep 0.5
    done
    if group_alive "$pid" || any_left "${mine[@]}"; then
      log "$name (group $pid) did not stop within 20s: KILL"
      kill -KILL -- "-$pid" 2>/dev/null
      signal_left KILL "${mine[@]}"
      for _ in $(seq 10); do
        group_alive "$pid" || any_left "${mine[@]}" || break
        sleep 0.5
      done
    fi
    log "stopped $name (group $pid, ${#mine[@]} processes) in $(($(date +%s) - t0))s"
    for p in "${mine[@]}"; do owned+=("$p:$name"); done
  fi
  stopped_groups+=("$pid:$name")
  rm -f "$f"
}

# Reverse start order: compute first (its guests die with its group), RabbitMQ and epmd last.
for s in nova-compute nova-scheduler nova-conductor nova-api neutron-server placement glance-api \
  keystone rabbitmq epmd; do
  stop_service "$s"
done
for f in "$RUN"/*.pid; do # anything else that left a PID file
  [ -e "$f" ] && stop_service "$(basename "$f" .pid)"
done

# Proof: nothing of what we started is left: no process of the groups, and none of the
# processes recorded before stopping (not even one that left its group or session).
check_left() {
  local entry pid e
  for entry in "${stopped_groups[@]}"; do
    pid=${entry%%:*}
    if group_alive "$pid"; then
      log "ERROR: ${entry#*:} (group $pid) still has processes: $(pgrep -g "$pid" | tr '\n' ' ')"
      rc=1
    fi
  done
  for e in "${owned[@]}"; do # pid:start:name
    if still "${e%:*}"; then
      log "ERROR: process ${e%%:*} of ${e##*:} is still running: $(tr '\0' ' ' <"/proc/${e%%:*}/cmdline" 2>/dev/null)"
      rc=1
    fi
  done
  if [ -d "$DIR/nova/instances" ]; then
    local left
    left=$(pgrep -f -- "-name grib-[0-9a-f-]{36} " || true)
    if [ -n "$left" ]; then
      log "ERROR: qemu guests of the test driver still running: $left"
      rc=1
    fi
  fi
}
check_left

purge_databases() {
  local db
  for db in $DATABASES; do
    runuser -u postgres -- dropdb --if-exists "$db" || rc=1
  done
  runuser -u postgres -- psql -X -q -c 'DROP ROLE IF EXISTS openstack' || rc=1
  log "databases dropped"
}

if [ -s "$RUN/postgresql.started" ]; then
  read -r ver name <"$RUN/postgresql.started"
  [ "${GRIB_PURGE:-0}" = 1 ] && purge_databases
  log "stopping PostgreSQL $ver/$name (started by openstack-up.sh)"
  pg_ctlcluster "$ver" "$name" stop || rc=1
  if pg_lsclusters -h | awk -v v="$ver" -v n="$name" '$1==v && $2==n {print $4}' | grep -q online; then
    log "ERROR: PostgreSQL $ver/$name is still online"
    rc=1
  else
    rm -f "$RUN/postgresql.started"
  fi
elif [ "${GRIB_PURGE:-0}" = 1 ] && command -v pg_lsclusters >/dev/null && pg_lsclusters -h | grep -q online; then
  purge_databases
fi

if [ "${GRIB_PURGE:-0}" = 1 ]; then
  rm -rf "$DIR"
  log "removed $DIR"
fi
log "OpenStack stopped in $(($(date +%s) - T0))s"
exit $rc
