#!/usr/bin/env bash
# openstack-up.sh - start a real OpenStack (Debian 12's Zed packages) on 127.0.0.1
# for the integration tests: Keystone, Glance (file store), Placement, Nova (api,
# conductor, scheduler, compute with the test virt driver .ci/harness/grib_qemu_virt.py),
# Neutron (ML2, agent-less binding), PostgreSQL and RabbitMQ. No systemd: every daemon
# runs in its own session (setsid), tracked by a PID file; .ci/openstack-down.sh stops them.
#
# Usage (root):  .ci/openstack-up.sh                 install, configure, start (idempotent)
#                .ci/openstack-up.sh restart NAME... restart only these services (e.g.
#                                                    nova-compute after editing the driver)
# Environment:
#   GRIB_OSL_DIR         state dir (configs, secrets, logs, PIDs, images)  [/var/lib/grib-openstack]
#   GRIB_OSL_SKIP_INSTALL=1  do not run apt-get
#   GRIB_GUEST_SLOTS     guests running at once under qemu                 [1]
#   GRIB_GUEST_ACCEL     auto|kvm|tcg for guests (auto probes KVM)         [auto]
#
# Writes $DIR/clouds.yaml (clouds it-admin, it-a, it-b, it-c, it-d; 0600) and $DIR/env (source it).
# The test driver appends one line per guest boot to $DIR/guest-boots.log (format in
# .ci/harness/grib_qemu_virt.py); `wc -l` before and after a test run counts its boots.
# Passwords are random, made once, kept in $DIR/secrets.env (0600); never on a command line.
set -Eeuo pipefail

T0=$(date +%s)
DIR=${GRIB_OSL_DIR:-/var/lib/grib-openstack}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HOST=127.0.0.1
REGION=RegionOne
KS_URL=http://$HOST:5000
TRANSPORT_URL="rabbit://guest:guest@$HOST:5672/"
PY=/usr/bin/python3 # not a pyenv/venv python3 from PATH: the OpenStack libraries are Debian's
ETC=$DIR/etc LOG=$DIR/log RUN=$DIR/run LIB=$DIR/pylib

PKGS=(keystone glance-api nova-api nova-conductor nova-scheduler placement-api neutron-server
  rabbitmq-server postgresql python3-psycopg2 python3-openstackclient curl
  qemu-system-x86 qemu-utils genisoimage)

log() { printf '[%4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}
on_err() {
  local rc=$? line=$1
  log "FAILED (rc=$rc) at line $line: ${BASH_COMMAND%%$'\n'*}"
  find "$LOG" -maxdepth 1 -type f \( -name '*.log' -o -name '*.out' \) -printf '%T@ %p\n' 2>/dev/null |
    sort -rn | head -2 | while read -r _ f; do
    echo "--- tail of $f" >&2
    tail -n 15 "$f" >&2
  done
  exit "$rc"
}
trap 'on_err $LINENO' ERR

# phase NAME: print how long the previous phase took, start timing the next one.
PHASE="" PHASE_T=$T0
phase() {
  local now
  now=$(date +%s)
  [ -n "$PHASE" ] && log "-- $PHASE took $((now - PHASE_T))s"
  PHASE=$1 PHASE_T=$now
}

[ "$(id -u)" = 0 ] || die "run as root"
mkdir -p "$ETC" "$LOG" "$RUN" "$LIB"

# ------------------------------------------------------------------ install
install_packages() {
  local missing=() p made_policy=0
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "packages already installed"
    return
  fi
  log "installing ${#missing[@]} packages: ${missing[*]}"
  # Package scripts must not start daemons (we start them); keep an existing policy file.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  # Lock::Timeout: wait for another apt (e.g. make-test-image.sh's) instead of failing.
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends
    -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}")
  if ! "${apt[@]}" >"$LOG/apt-install.log" 2>&1; then
    log "apt-get install failed; running apt-get update once and retrying"
    apt-get -o DPkg::Lock::Timeout=600 update -q >>"$LOG/apt-install.log" 2>&1 || true
    "${apt[@]}" >>"$LOG/apt-install.log" 2>&1 || {
      tail -20 "$LOG/apt-install.log" >&2
      [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
      die "apt-get install failed (log: $LOG/apt-install.log)"
    }
  fi
  [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  log "packages installed"
}

# ------------------------------------------------------------------ secrets
# Random passwords, made once. The file is sourced; values are [A-Za-z0-9] only.
load_secrets() {
  local f=$DIR/secrets.env
  # Each missing one is added, so a stack made before a project was added
  # (it-d) keeps its other passwords.
  (
    umask 077
    touch "$f"
    for v in GRIB_ADMIN_PW GRIB_SVC_PW GRIB_DB_PW GRIB_IT_PW_A GRIB_IT_PW_B GRIB_IT_PW_C GRIB_IT_PW_D; do
      grep -q "^$v=" "$f" ||
        printf '%s=%s\n' "$v" "$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24)" >>"$f"
    done
  )
  chmod 0600 "$f"
  # shellcheck disable=SC1090
  . "$f"
  export GRIB_ADMIN_PW GRIB_SVC_PW GRIB_DB_PW GRIB_IT_PW_A GRIB_IT_PW_B GRIB_IT_PW_C GRIB_IT_PW_D
}

# ------------------------------------------------------------------ process helpers
alive() {
  local f=$RUN/$1.pid
  [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

# start NAME CMD...: run CMD in a new session (its PID is then its process-group id, so
# the down script can signal the whole group), output to $LOG/NAME.out, PID to $RUN/NAME.pid.
start() {
  local name=$1
  shift
  if alive "$name"; then
    log "$name already running (pid $(cat "$RUN/$name.pid"))"
    return
  fi
  log "starting $name"
  setsid "$@" >>"$LOG/$name.out" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

# stop NAME: TERM the process group, wait up to 20 s, then KILL it (used by restart).
stop() {
  local f=$RUN/$1.pid pid i
  [ -s "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 -- "-$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    for i in $(seq 40); do
      kill -0 -- "-$pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

wait_http() { # NAME URL TIMEOUT
  local name=$1 url=$2 t=$3 i=0
  until curl -s -o /dev/null -m 5 "$url"; do
    alive "$name" || {
      tail -n 30 "$LOG/$name.out" "$LOG/$name.log" 2>/dev/null >&2 || true
      die "$name died"
    }
    i=$((i + 1))
    [ $i -lt $((t * 2)) ] || die "$name did not answer on $url within ${t}s"
    sleep 0.5
  done
  log "$name answers on $url"
}

wait_port() { # NAME PORT TIMEOUT
  local name=$1 port=$2 t=$3 i=0
  until (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null; do
    alive "$name" || {
      tail -n 30 "$LOG/$name.out" >&2 || true
      die "$name died"
    }
    i=$((i + 1))
    [ $i -lt $((t * 2)) ] || die "$name did not listen on $HOST:$port within ${t}s"
    sleep 0.5
  done
  log "$name listens on $HOST:$port"
}

UWSGI=""
uwsgi_app() { # NAME PORT WSGI_FILE PROCESSES THREADS ENV...
  local name=$1 port=$2 file=$3 procs=$4 threads=$5 e
  shift 5
  local envs=()
  for e in "$@"; do envs+=(--env "$e"); done
  # Connection: close - uwsgi's http-socket closes after each response without saying so.
  # skip-atexit-teardown + short mercies - greenlet crashes at interpreter teardown would
  # otherwise keep a dying master around for 60 s.
  start "$name" "$UWSGI" --master --die-on-term --no-orphans --need-app --lazy-apps \
    --http-socket "$HOST:$port" --wsgi-file "$file" --processes "$procs" --threads "$threads" \
    --buffer-size 65535 --enable-threads --add-header "Connection: close" \
    --skip-atexit-teardown --worker-reload-mercy 5 --reload-mercy 8 \
    --procname-prefix-spaced "grib-$name" "${envs[@]}"
}

authtoken() { # SERVICE_USER
  cat <<EOF
[keystone_authtoken]
www_authenticate_uri = $KS_URL
auth_url = $KS_URL
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = $1
password = $GRIB_SVC_PW
service_token_roles_required = true
EOF
}

service_auth() { # SECTION USER: keystoneauth options for calls to another service
  cat <<EOF
[$1]
auth_url = $KS_URL
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = $2
password = $GRIB_SVC_PW
region_name = $REGION
EOF
}

db_url() { echo "postgresql+psycopg2://openstack:$GRIB_DB_PW@$HOST/$1"; }

# write_conf FILE: stdin to FILE, 0600 (configs hold passwords)
write_conf() { (umask 077 && cat >"$1"); }

# ------------------------------------------------------------------ postgresql
DATABASES="keystone glance placement nova_api nova nova_cell0 neutron"
setup_postgres() {
  local ver name port
  read -r ver name _ < <(pg_lsclusters -h | head -1) || true
  if [ -z "${ver:-}" ]; then
    ver=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n | tail -1)
    name=main
    log "creating PostgreSQL cluster $ver/$name"
    pg_createcluster "$ver" "$name" >/dev/null
  fi
  # Debian's default listen_addresses is 'localhost': loopback only.
  if pg_lsclusters -h | awk -v v="$ver" -v n="$name" '$1==v && $2==n {print $4}' | grep -q online; then
    log "PostgreSQL $ver/$name already online (not ours to stop)"
  else
    log "starting PostgreSQL $ver/$name"
    pg_ctlcluster "$ver" "$name" start
    echo "$ver $name" >"$RUN/postgresql.started"
  fi
  port=$(pg_lsclusters -h | awk -v v="$ver" -v n="$name" '$1==v && $2==n {print $3}')
  [ "$port" = 5432 ] || die "PostgreSQL $ver/$name listens on port $port, expected 5432"
  psqlq() { runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -tA "$@"; }
  # The password goes through stdin, not argv.
  if [ "$(psqlq -c "SELECT 1 FROM pg_roles WHERE rolname='openstack'")" != 1 ]; then
    echo "CREATE ROLE openstack LOGIN PASSWORD '$GRIB_DB_PW'" | psqlq
  else
    echo "ALTER ROLE openstack PASSWORD '$GRIB_DB_PW'" | psqlq
  fi
  local db
  for db in $DATABASES; do
    [ "$(psqlq -c "SELECT 1 FROM pg_database WHERE datname='$db'")" = 1 ] ||
      runuser -u postgres -- createdb -O openstack "$db"
  done
  log "PostgreSQL databases ready"
}

# ------------------------------------------------------------------ rabbitmq
setup_rabbit() {
  local rd=$DIR/rabbitmq
  mkdir -p "$rd/mnesia" "$rd/log"
  cat >"$rd/rabbitmq.conf" <<EOF
listeners.tcp.1 = $HOST:5672
loopback_users.guest = true
log.file.level = warning
EOF
  echo '[].' >"$rd/enabled_plugins"
  # Our own epmd on loopback, in the foreground, so that we own its PID.
  start epmd env ERL_EPMD_ADDRESS=$HOST epmd -address $HOST -port 4369
  wait_port epmd 4369 30
  start rabbitmq env HOME="$rd" \
    RABBITMQ_NODENAME=grib@localhost RABBITMQ_NODE_IP_ADDRESS=$HOST RABBITMQ_NODE_PORT=5672 \
    RABBITMQ_DIST_PORT=25672 ERL_EPMD_ADDRESS=$HOST \
    RABBITMQ_CONFIG_FILE="$rd/rabbitmq" RABBITMQ_CONF_ENV_FILE=/dev/null \
    RABBITMQ_ENABLED_PLUGINS_FILE="$rd/enabled_plugins" \
    RABBITMQ_MNESIA_BASE="$rd/mnesia" RABBITMQ_LOG_BASE="$rd/log" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    /usr/lib/rabbitmq/bin/rabbitmq-server
  wait_port rabbitmq 5672 120
}

# ------------------------------------------------------------------ keystone
setup_keystone() {
  local d=$ETC/keystone
  mkdir -p "$d" "$DIR/keystone/fernet-keys" "$DIR/keystone/credential-keys"
  write_conf "$d/keystone.conf" <<EOF
[DEFAULT]
use_stderr = true
[database]
connection = $(db_url keystone)
[token]
provider = fernet
[fernet_tokens]
key_repository = $DIR/keystone/fernet-keys
[fernet_receipts]
key_repository = $DIR/keystone/fernet-keys
[credential]
key_repository = $DIR/keystone/credential-keys
[oslo_policy]
policy_dirs = /etc/keystone/policy.d
[cache]
# Each worker keeps what it computed for a token (its roles, its catalog) in
# memory: without it every check of a new token by a service costs keystone
# about 120 ms of CPU, which four builds at once queue behind on 2 cores.
enabled = true
backend = oslo_cache.dict
EOF
  local km=(keystone-manage --config-file "$d/keystone.conf")
  if [ ! -e "$DIR/keystone/.initialised" ]; then
    log "keystone db_sync, keys, bootstrap"
    {
      "${km[@]}" db_sync
      "${km[@]}" fernet_setup --keystone-user root --keystone-group root
      "${km[@]}" credential_setup --keystone-user root --keystone-group root
      # bootstrap reads the admin password from OS_BOOTSTRAP_PASSWORD (not argv)
      OS_BOOTSTRAP_PASSWORD=$GRIB_ADMIN_PW "${km[@]}" bootstrap --bootstrap-username admin \
        --bootstrap-project-name admin --bootstrap-role-name admin \
        --bootstrap-service-name keystone --bootstrap-region-id $REGION \
        --bootstrap-admin-url $KS_URL/v3/ --bootstrap-internal-url $KS_URL/v3/ \
        --bootstrap-public-url $KS_URL/v3/
    } >>"$LOG/keystone-manage.log" 2>&1
    touch "$DIR/keystone/.initialised"
  fi
  uwsgi_app keystone 5000 /usr/bin/keystone-wsgi-public 2 2 OS_KEYSTONE_CONFIG_DIR="$d"
  wait_http keystone $KS_URL/v3 120
}

# ------------------------------------------------------------------ glance
setup_glance() {
  local d=$ETC/glance g=$DIR/glance
  mkdir -p "$d" "$g/images" "$g/staging" "$g/tasks" "$g/cache"
  write_conf "$d/glance-api.conf" <<EOF
[DEFAULT]
bind_host = $HOST
bind_port = 9292
# three processes: concurrent uploads (the copy to several clouds) are served
# in parallel; one process (0) takes them in turn
workers = 3
enabled_backends = fs:file
image_cache_dir = $g/cache
[database]
connection = $(db_url glance)
$(authtoken glance)
[paste_deploy]
flavor = keystone
config_file = /etc/glance/glance-api-paste.ini
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = $g/images
[os_glance_staging_store]
filesystem_store_datadir = $g/staging
[os_glance_tasks_store]
filesystem_store_datadir = $g/tasks
[oslo_policy]
policy_dirs = /etc/glance/policy.d
EOF
  if [ ! -e "$g/.initialised" ]; then
    log "glance db_sync"
    glance-manage --config-file "$d/glance-api.conf" db_sync >>"$LOG/glance-manage.log" 2>&1
    touch "$g/.initialised"
  fi
  start glance-api glance-api --config-file "$d/glance-api.conf" --log-file "$LOG/glance-api.log"
}

# ------------------------------------------------------------------ placement
setup_placement() {
  local d=$ETC/placement
  mkdir -p "$d"
  write_conf "$d/placement.conf" <<EOF
[DEFAULT]
use_stderr = true
[api]
auth_strategy = keystone
[placement_database]
connection = $(db_url placement)
$(authtoken placement)
[oslo_policy]
policy_dirs = /etc/placement/policy.d
EOF
  if [ ! -e "$DIR/.placement-initialised" ]; then
    log "placement db sync"
    placement-manage --config-file "$d/placement.conf" db sync >>"$LOG/placement-manage.log" 2>&1
    touch "$DIR/.placement-initialised"
  fi
  uwsgi_app placement 8778 /usr/bin/placement-api 1 2 OS_PLACEMENT_CONFIG_DIR="$d"
}

# ------------------------------------------------------------------ neutron
setup_neutron() {
  local d=$ETC/neutron
  mkdir -p "$d" "$DIR/neutron/lock"
  write_conf "$d/neutron.conf" <<EOF
[DEFAULT]
bind_host = $HOST
bind_port = 9696
core_plugin = ml2
service_plugins =
auth_strategy = keystone
transport_url = $TRANSPORT_URL
# Two API workers: on the 2-core test machine one neutron-server process was the
# bottleneck of builds that run at once (every server needs a port and its binding);
# BenchmarkParallelMatrix measures it.
api_workers = 2
rpc_workers = 1
rpc_state_report_workers = 0
state_path = $DIR/neutron
api_paste_config = /etc/neutron/api-paste.ini
notify_nova_on_port_status_changes = true
notify_nova_on_port_data_changes = true
[database]
connection = $(db_url neutron)
$(authtoken neutron)
$(service_auth nova nova)
$(service_auth placement placement)
[oslo_concurrency]
lock_path = $DIR/neutron/lock
[oslo_policy]
policy_dirs = /etc/neutron/policy.d
[agent]
root_helper = true
EOF
  # Tenant networks are vxlan segments that no agent ever wires: API objects only.
  write_conf "$d/ml2_conf.ini" <<EOF
[ml2]
type_drivers = vxlan
tenant_network_types = vxlan
mechanism_drivers = grib_noop
extension_drivers = port_security
[ml2_type_vxlan]
vni_ranges = 1:1000
[securitygroup]
enable_security_group = true
EOF
  local c=(--config-file "$d/neutron.conf" --config-file "$d/ml2_conf.ini")
  if [ ! -e "$DIR/neutron/.initialised" ]; then
    log "neutron db upgrade heads"
    neutron-db-manage "${c[@]}" upgrade heads >>"$LOG/neutron-db-manage.log" 2>&1
    touch "$DIR/neutron/.initialised"
  fi
  start neutron-server env PYTHONPATH="$LIB" neutron-server "${c[@]}" --log-file "$LOG/neutron-server.log"
}

# ------------------------------------------------------------------ nova
setup_nova() {
  local d=$ETC/nova
  mkdir -p "$d" "$DIR/nova/instances" "$DIR/nova/lock"
  write_conf "$d/nova.conf" <<EOF
[DEFAULT]
transport_url = $TRANSPORT_URL
my_ip = $HOST
host = grib-compute
state_path = $DIR/nova
instances_path = $DIR/nova/instances
compute_driver = grib_qemu_virt.GuestDriver
enabled_apis = osapi_compute
osapi_compute_listen = $HOST
vif_plugging_is_fatal = false
vif_plugging_timeout = 0
allow_resize_to_same_host = true
use_rootwrap_daemon = false
[api]
auth_strategy = keystone
[api_database]
connection = $(db_url nova_api)
[database]
connection = $(db_url nova)
$(authtoken nova)
[service_user]
send_service_user_token = false
$(service_auth placement placement)
valid_interfaces = public
$(service_auth neutron neutron)
valid_interfaces = public
[glance]
region_name = $REGION
valid_interfaces = public
[cinder]
os_region_name = $REGION
[conductor]
workers = 1
[scheduler]
workers = 1
discover_hosts_in_cells_interval = 10
# one compute host: a failed build goes straight to ERROR with its fault
max_attempts = 1
[vnc]
enabled = false
[oslo_concurrency]
lock_path = $DIR/nova/lock
[wsgi]
api_paste_config = /etc/nova/api-paste.ini
[oslo_policy]
policy_dirs = /etc/nova/policy.d
EOF
  # Project it-d's user has the role grib-no-console (grib_seed.py): Nova refuses
  # it the console output, as clouds that forbid it do. oslo.policy re-reads
  # the directory, so a running nova-api takes this file without a restart.
  mkdir -p /etc/nova/policy.d
  cat >/etc/nova/policy.d/50-grib-no-console.yaml <<'EOF'
# Written by .ci/openstack-up.sh: the test project it-d may not read consoles.
"os_compute_api:os-console-output": "rule:project_member_or_admin and not role:grib-no-console"
EOF
  # nova's WSGI loader takes the paste pipeline from the first file in OS_NOVA_CONFIG_FILES
  ln -sf /etc/nova/api-paste.ini "$d/api-paste.ini"
  if [ ! -e "$DIR/nova/.initialised" ]; then
    log "nova api_db sync, cells, db sync"
    local nm=(nova-manage --config-file "$d/nova.conf")
    {
      "${nm[@]}" api_db sync
      "${nm[@]}" cell_v2 map_cell0 --database_connection "$(db_url nova_cell0)"
      "${nm[@]}" cell_v2 list_cells | grep -q ' cell1 ' || "${nm[@]}" cell_v2 create_cell --name cell1
      "${nm[@]}" db sync
    } >>"$LOG/nova-manage.log" 2>&1
    touch "$DIR/nova/.initialised"
  fi
}

start_nova_api() {
  uwsgi_app nova-api 8774 /usr/bin/nova-api-wsgi 2 1 OS_NOVA_CONFIG_DIR="$ETC/nova" \
    "OS_NOVA_CONFIG_FILES=api-paste.ini;nova.conf"
}

start_nova_services() {
  local c=(--config-file "$ETC/nova/nova.conf")
  start nova-conductor nova-conductor "${c[@]}" --log-file "$LOG/nova-conductor.log"
  start nova-scheduler nova-scheduler "${c[@]}" --log-file "$LOG/nova-scheduler.log"
  start_nova_compute
}

# nova-compute without the nova-compute package (which would pull libvirt): the launcher
# registers the test driver as nova.virt.grib_qemu_virt and runs nova-compute's main().
start_nova_compute() {
  touch "$DIR/guest-boots.log"
  start nova-compute env PYTHONPATH="$LIB" GRIB_VIRT_LOG="$LOG/grib-virt.log" \
    GRIB_GUEST_BOOTS="$DIR/guest-boots.log" \
    GRIB_GUEST_SLOTS="${GRIB_GUEST_SLOTS:-1}" GRIB_GUEST_ACCEL="${GRIB_GUEST_ACCEL:-auto}" \
    $PY "$LIB/grib_nova_compute.py" --config-file "$ETC/nova/nova.conf" \
    --log-file "$LOG/nova-compute.log"
}

discover_compute() {
  local i=0
  until nova-manage --config-file "$ETC/nova/nova.conf" cell_v2 discover_hosts >>"$LOG/nova-manage.log" 2>&1 &&
    runuser -u postgres -- psql -X -tA -d nova_api -c \
      "SELECT 1 FROM host_mappings WHERE host='grib-compute'" | grep -q 1; do
    alive nova-compute || die "nova-compute died (see $LOG/nova-compute.log)"
    i=$((i + 1))
    [ $i -lt 90 ] || die "nova-compute did not register within 180s"
    sleep 2
  done
  log "compute host grib-compute mapped to cell1"
}

# ------------------------------------------------------------------ harness plugins
install_harness() {
  # A copy, so that the running stack does not depend on the checkout it came from.
  cp -r "$HERE/harness/." "$LIB/"
}

# ------------------------------------------------------------------ clouds.yaml / env
cloud_entry() { # NAME USER PASSWORD PROJECT
  cat <<EOF
  $1:
    auth:
      auth_url: $KS_URL/v3
      username: $2
      password: $3
      project_name: $4
      user_domain_name: Default
      project_domain_name: Default
    region_name: $REGION
    interface: public
    identity_api_version: 3
EOF
}

write_clouds() {
  (
    umask 077
    {
      echo "# Written by .ci/openstack-up.sh. it-admin: admin (harness, leak checks)."
      echo "# it-a: build cloud; it-b, it-c: upload clouds (each its own project and member user);"
      echo "# it-d: a build cloud whose Nova policy forbids reading the console."
      echo "clouds:"
      cloud_entry it-admin admin "$GRIB_ADMIN_PW" admin
      cloud_entry it-a it-a "$GRIB_IT_PW_A" it-a
      cloud_entry it-b it-b "$GRIB_IT_PW_B" it-b
      cloud_entry it-c it-c "$GRIB_IT_PW_C" it-c
      cloud_entry it-d it-d "$GRIB_IT_PW_D" it-d
    } >"$DIR/clouds.yaml.tmp"
    mv "$DIR/clouds.yaml.tmp" "$DIR/clouds.yaml"
  )
  cat >"$DIR/env" <<EOF
export OS_CLIENT_CONFIG_FILE=$DIR/clouds.yaml
export GRIB_IT_CLOUDS=$DIR/clouds.yaml
export GRIB_GUEST_BOOTS=$DIR/guest-boots.log
EOF
  chmod 0755 "$DIR" # tests may read clouds.yaml (0600) only as root; the dir itself may be listed
}

# ------------------------------------------------------------------ restart subcommand
restart() {
  local name
  for name in "$@"; do
    log "restarting $name"
    stop "$name"
    case $name in
    nova-compute)
      install_harness
      start_nova_compute
      ;;
    nova-conductor | nova-scheduler) start_nova_services ;;
    nova-api) start_nova_api ;;
    neutron-server)
      install_harness
      start neutron-server env PYTHONPATH="$LIB" neutron-server --config-file "$ETC/neutron/neutron.conf" \
        --config-file "$ETC/neutron/ml2_conf.ini" --log-file "$LOG/neutron-server.log"
      ;;
    *) die "restart supports nova-compute, nova-conductor, nova-scheduler, nova-api, neutron-server" ;;
    esac
  done
}

# ------------------------------------------------------------------ main
# uwsgi_binary: the newest uwsgi_python3* plugin binary Debian installed.
uwsgi_binary() { find /usr/bin -maxdepth 1 -name 'uwsgi_python3*' -printf '%p\n' 2>/dev/null | sort | tail -1; }

if [ "${1:-}" = restart ]; then
  shift
  [ $# -gt 0 ] || die "usage: $0 restart SERVICE..."
  UWSGI=$(uwsgi_binary)
  load_secrets
  restart "$@"
  exit 0
fi
[ $# -eq 0 ] || die "usage: $0 [restart SERVICE...]"

phase install
[ "${GRIB_OSL_SKIP_INSTALL:-0}" = 1 ] || install_packages
UWSGI=$(uwsgi_binary)
[ -x "$UWSGI" ] || die "no uwsgi python3 plugin binary in /usr/bin"
load_secrets
install_harness

phase postgresql+rabbitmq
setup_postgres
setup_rabbit

phase keystone
setup_keystone
$PY "$LIB/grib_seed.py" catalog >>"$LOG/seed.log" 2>&1 || { tail -20 "$LOG/seed.log" >&2; die "catalog setup failed"; }

phase "glance+placement+neutron+nova"
setup_glance
setup_placement
setup_neutron
setup_nova
start_nova_api
start_nova_services
wait_http glance-api http://$HOST:9292/ 120
wait_http placement http://$HOST:8778/ 120
wait_http neutron-server http://$HOST:9696/ 180
wait_http nova-api http://$HOST:8774/ 180
discover_compute

phase seed
$PY "$LIB/grib_seed.py" cloud >>"$LOG/seed.log" 2>&1 || { tail -20 "$LOG/seed.log" >&2; die "seeding failed"; }
write_clouds
phase finished
log "OpenStack is up in $(($(date +%s) - T0))s: state $DIR, logs $LOG"
echo "$DIR/clouds.yaml"
