#!/usr/bin/env bash
# The CI services: a real single-node Slurm cluster (with slurmdbd accounting) and a real MLflow server,
# both on 127.0.0.1 only. Three idempotent verbs (infra.md §6):
#
#   bash scripts/services.sh install   # apt packages + a full mlflow==3.17.2 (a no-op when present)
#   bash scripts/services.sh start     # munge → MariaDB → slurmdbd → slurmctld → slurmd → MLflow
#   bash scripts/services.sh stop      # stop only what `start` started (recorded PIDs), infra.md §2.6 order
#
# `start` reuses a cluster or server that is already running and never stops it later. It writes
# .services/env.sh (MLFLOW_TRACKING_URI, T2PO_SERVICES=1) for the test job to source.
# Knobs: PYTHON (python3), T2PO_MLFLOW_PORT (5055), T2PO_SLURM_CPUS (8), T2PO_SERVICES_DIR (.services).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
SVC=${T2PO_SERVICES_DIR:-$ROOT/.services}
PIDS=$SVC/pids
LOGS=$SVC/logs
PORT=${T2PO_MLFLOW_PORT:-5055}
# More CPUs than cores (SlurmdParameters=config_overrides, infra.md §2.3) so array tasks run in parallel.
SLURM_CPUS=${T2PO_SLURM_CPUS:-8}
MLFLOW_VERSION=3.17.2
APT_PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server curl)
SLURM_ETC=/etc/slurm

log() { printf '[services] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Poll a command until it succeeds: wait_for SECONDS DESCRIPTION CMD...
wait_for() {
  local limit=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then die "$what not ready after ${limit}s (logs: $LOGS)"; fi
    sleep 0.2
  done
}

# ---------------------------------------------------------------------------------------------- install
have_packages() {
  local p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || return 1
  done
}

have_full_mlflow() {
  # The full distribution (not mlflow-skinny): `mlflow server` needs it (infra.md §5.1).
  "$PY" - "$MLFLOW_VERSION" <<'EOF' >/dev/null 2>&1
import importlib.metadata as md, sys
assert md.version("mlflow") == sys.argv[1]
import mlflow.server  # noqa: F401
EOF
}

cmd_install() {
  local t0=$SECONDS
  if have_packages; then
    log "apt packages present"
  else
    export DEBIAN_FRONTEND=noninteractive
    # Fresh containers ship without package lists; stale lists give 404s: update and retry once.
    if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -E '^(lock|partial|auxfiles)$')" ]; then
      apt-get update -qq
    fi
    if ! apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >"/tmp/t2po-apt.log" 2>&1; then
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >"/tmp/t2po-apt.log" 2>&1 \
        || { tail -20 /tmp/t2po-apt.log >&2; die "apt-get install failed"; }
    fi
    log "installed ${APT_PACKAGES[*]}"
  fi
  if have_full_mlflow; then
    log "mlflow $MLFLOW_VERSION (full) present"
  else
    "$PY" -m pip install -q "mlflow==$MLFLOW_VERSION"
    have_full_mlflow || die "mlflow==$MLFLOW_VERSION is not importable after pip install"
    log "installed mlflow==$MLFLOW_VERSION"
  fi
  log "install done in $((SECONDS - t0))s"
}

# ------------------------------------------------------------------------------------------------ start
record() { # record NAME PID: a daemon this invocation started (stop kills only these)
  printf '%s\n' "$2" >"$PIDS/$1.pid"
}

pid_from_file() { # wait for a daemon's own pid file
  local f=$1 i
  for i in $(seq 1 50); do [ -s "$f" ] && { tr -d ' \n' <"$f"; return 0; }; sleep 0.1; done
  return 1
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then log "munge: reusing running daemon"; return; fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  [ -f /etc/munge/munge.key ] || { mungekey --create --keyfile /etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; chmod 600 /etc/munge/munge.key; }
  rm -f /run/munge/munged.pid
  runuser -u munge -- munged --force
  record munged "$(pid_from_file /run/munge/munged.pid)"
  wait_for 15 munge bash -c 'munge -n | unmunge'
  log "munge: started"
}

start_mariadb() {
  if mariadb-admin ping >/dev/null 2>&1; then log "mariadb: reusing running server"; else
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$LOGS/mariadb-install.log" 2>&1
    # Unix socket only (infra.md §2.5): nothing listens on TCP.
    setsid mariadbd --user=mysql --skip-networking --pid-file=/run/mysqld/mysqld.pid \
      >"$LOGS/mariadb.log" 2>&1 </dev/null &
    record mariadbd $!
    wait_for 30 mariadb mariadb-admin ping
    log "mariadb: started"
  fi
  local pass
  pass=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
  mariadb <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$pass';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
  printf '%s' "$pass" >"$SVC/.dbpass"
  chmod 600 "$SVC/.dbpass"
}

write_slurm_configs() {
  local node mem pass
  node=$(hostname -s)
  # RealMemory above what slurmd -C reports drains the node: use 90 % of it (infra.md §2.3).
  mem=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1)
  mem=$(( ${mem:-2048} * 9 / 10 ))
  pass=$(cat "$SVC/.dbpass")
  mkdir -p "$SLURM_ETC" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
  cat >"$SLURM_ETC/slurm.conf" <<EOF
# Generated by t2po scripts/services.sh (infra.md §2.3).
ClusterName=ci
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$node NodeAddr=127.0.0.1 CPUs=$SLURM_CPUS RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  # slurmdbd refuses a world-readable config (infra.md §2.4).
  umask 077
  cat >"$SLURM_ETC/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$pass
StorageLoc=slurm_acct_db
PidFile=/run/slurm/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
EOF
  umask 022
  chmod 600 "$SLURM_ETC/slurmdbd.conf"
}

slurm_up() {
  scontrol ping 2>/dev/null | grep -q "is UP" && sinfo -h -o %T 2>/dev/null | grep -q -E 'idle|mixed|alloc'
}

start_slurm() {
  if slurm_up && sacct -n -X -S now >/dev/null 2>&1; then log "slurm: reusing running cluster"; return; fi
  start_munge
  start_mariadb
  write_slurm_configs
  rm -f /run/slurm/slurmdbd.pid /run/slurm/slurmctld.pid /run/slurm/slurmd.pid
  slurmdbd
  record slurmdbd "$(pid_from_file /run/slurm/slurmdbd.pid)"
  wait_for 30 slurmdbd sacctmgr -n list cluster
  sacctmgr -i add cluster ci >/dev/null 2>&1 || true  # slurmctld registers it too
  slurmctld
  record slurmctld "$(pid_from_file /run/slurm/slurmctld.pid)"
  slurmd
  record slurmd "$(pid_from_file /run/slurm/slurmd.pid)"
  wait_for 30 "slurm node" slurm_up
  # submitit reads job states through sacct: only usable once it answers (infra.md §2.1, §2.5 step 6).
  wait_for 30 sacct sacct -n -X -S now
  log "slurm: started ($(sinfo -h -o '%P %T %c CPUs'))"
}

mlflow_health() { curl -fsS --max-time 2 "http://127.0.0.1:$PORT/health" 2>/dev/null | grep -q OK; }

start_mlflow() {
  if mlflow_health; then log "mlflow: reusing server on 127.0.0.1:$PORT"; return; fi
  # A fresh state dir per start: a reused database keeps old runs (infra.md §6 "Per-run state").
  local state
  state="$SVC/mlflow-$(date +%Y%m%d-%H%M%S)-$$"
  mkdir -p "$state/artifacts"
  local mlflow_bin
  mlflow_bin=$("$PY" -c 'import shutil,sys,os; p=os.path.join(os.path.dirname(sys.executable),"mlflow"); print(p if os.path.exists(p) else shutil.which("mlflow") or "")')
  [ -n "$mlflow_bin" ] || die "no mlflow executable; run: bash scripts/services.sh install"
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid "$mlflow_bin" server \
    --backend-store-uri "sqlite:///$state/mlflow.db" --artifacts-destination "$state/artifacts" \
    --host 127.0.0.1 --port "$PORT" --workers 1 >"$LOGS/mlflow.log" 2>&1 </dev/null &
  record mlflow $!
  local deadline=$((SECONDS + 90))
  until mlflow_health; do
    kill -0 "$(cat "$PIDS/mlflow.pid")" 2>/dev/null || { tail -20 "$LOGS/mlflow.log" >&2; die "mlflow server exited"; }
    ((SECONDS < deadline)) || die "mlflow server not healthy after 90s (log: $LOGS/mlflow.log)"
    sleep 0.2
  done
  log "mlflow: started on 127.0.0.1:$PORT (state $state)"
}

cmd_start() {
  local t0=$SECONDS
  command -v slurmctld >/dev/null || die "Slurm is not installed; run: bash scripts/services.sh install"
  mkdir -p "$PIDS" "$LOGS"
  start_slurm
  start_mlflow
  cat >"$SVC/env.sh" <<EOF
# Written by scripts/services.sh start; source it before the service test tiers.
export MLFLOW_TRACKING_URI=http://127.0.0.1:$PORT
export T2PO_SERVICES=1
EOF
  log "start done in $((SECONDS - t0))s; source $SVC/env.sh"
}

# ------------------------------------------------------------------------------------------------- stop
# stop_one NAME: TERM the recorded PID, KILL after a bounded wait (infra.md §2.6).
stop_one() {
  local f="$PIDS/$1.pid" pid i
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 75); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$1 ($pid) ignored TERM for 15s: KILL"
      # The MLflow server was started with setsid: its process group holds the uvicorn workers (§5.3).
      if [ "$1" = mlflow ]; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "$1: stopped"
  fi
  rm -f "$f"
}

cmd_stop() {
  local t0=$SECONDS
  [ -d "$PIDS" ] || { log "nothing recorded; nothing to stop"; return 0; }
  [ -f "$PIDS/mlflow.pid" ] && rm -f "$SVC/env.sh"
  # Order of infra.md §2.6: slurmdbd before MariaDB, or it logs connect errors.
  local name
  for name in slurmd slurmctld mlflow slurmdbd mariadbd munged; do stop_one "$name"; done
  log "stop done in $((SECONDS - t0))s"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  *) echo "usage: bash scripts/services.sh install|start|stop" >&2; exit 2 ;;
esac
