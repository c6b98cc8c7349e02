#!/usr/bin/env bash
# Stand up a throw-away single-node SLURM (munge + MariaDB + slurmdbd + slurmctld + slurmd) under STATE_DIR.
#
# Usage: tests/slurm/setup.sh STATE_DIR
#   Installs Debian's packages with apt-get when missing (needs root; their services are kept from starting), writes
#   every config, key, socket, log and pid file under STATE_DIR (the packages' /etc configs are not used), starts
#   the daemons in the background and waits until the node is idle and accounting answers. Writes STATE_DIR/env.sh:
#   `export SLURM_CONF=...` and a PATH with STATE_DIR/bin (an srun that keeps SLURM_CONF, see below) first; source it
#   before using the cluster.
#   Idempotent: a previous cluster in STATE_DIR is torn down first (teardown.sh). Every step is time-bounded.
# Exit status: 0 ready; 77 SLURM cannot be had on this machine (not root, no apt, packages or daemons unavailable):
#   the caller should skip, the reason is the last line of stderr; anything else is a bug in this script.
# Ports (override by env): FMX_SLURMCTLD_PORT 16817, FMX_SLURMD_PORT 16818, FMX_SLURMDBD_PORT 16819,
#   FMX_MARIADB_PORT 16306; FMX_SLURM_PARTITION debug, FMX_SLURM_ACCOUNT fmxtest.
set -euo pipefail

STATE=${1:?usage: setup.sh STATE_DIR}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
CTLD_PORT=${FMX_SLURMCTLD_PORT:-16817}
SLURMD_PORT=${FMX_SLURMD_PORT:-16818}
DBD_PORT=${FMX_SLURMDBD_PORT:-16819}
DB_PORT=${FMX_MARIADB_PORT:-16306}
CLUSTER=fmxtest
PARTITION=${FMX_SLURM_PARTITION:-debug}
ACCOUNT=${FMX_SLURM_ACCOUNT:-fmxtest}

skip() { echo "SKIP: $*" >&2; exit 77; }
log() { echo "[slurm-setup $(date +%T)] $*" >&2; }
# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.2 s until it succeeds, else give up.
wait_for() {
    local limit=$1 what=$2; shift 2
    local end=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= end)); then return 1; fi
        sleep 0.2
    done
    log "$what ready"
}
# show the tail of a daemon's log, then skip: a daemon that cannot start on this machine.
daemon_failed() { tail -n 20 "$2" >&2 2>/dev/null || true; skip "$1 did not start within its time limit (log: $2)"; }

[[ $(id -u) == 0 ]] || skip "not root: cannot install or run the SLURM daemons"

# --- 1. packages -------------------------------------------------------------------------------------------------
NEED=()
for pair in munge:munged slurmctld:slurmctld slurmd:slurmd slurm-client:sbatch slurmdbd:slurmdbd \
    mariadb-server:mariadbd; do
    command -v "${pair#*:}" >/dev/null 2>&1 || [[ -x /usr/sbin/${pair#*:} ]] || NEED+=("${pair%%:*}")
done
if ((${#NEED[@]})); then
    command -v apt-get >/dev/null || skip "no apt-get to install ${NEED[*]}"
    log "installing ${NEED[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # A policy-rc.d that says 101 keeps the packages from starting their own system-wide services (munge, mariadb,
    # slurm*): we start private ones below. Containers usually have one; otherwise one is put there for the install.
    OWN_POLICY=
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\n# tests/slurm/setup.sh: no service starts during its apt-get install\nexit 101\n' \
            >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && OWN_POLICY=1
        trap '[[ -n $OWN_POLICY ]] && rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    if ! timeout 240 apt-get install -y -qq --no-install-recommends "${NEED[@]}" >"$STATE/apt.log" 2>&1; then
        timeout 180 apt-get update -qq >>"$STATE/apt.log" 2>&1 || skip "apt-get update failed (see $STATE/apt.log)"
        timeout 300 apt-get install -y -qq --no-install-recommends "${NEED[@]}" >>"$STATE/apt.log" 2>&1 \
            || skip "apt-get install ${NEED[*]} failed (see $STATE/apt.log)"
    fi
    [[ -n $OWN_POLICY ]] && rm -f /usr/sbin/policy-rc.d
    OWN_POLICY=
fi
export PATH=$PATH:/usr/sbin

# --- 2. clean slate, layout, configs -----------------------------------------------------------------------------
"$HERE/teardown.sh" "$STATE" >/dev/null 2>&1 || true
rm -rf "${STATE:?}"/{bin,munge,db,ctld,spool,run,log,slurm.conf,slurmdbd.conf,env.sh}
mkdir -p "$STATE"/{munge,db,ctld,spool,run,log}
chmod 700 "$STATE/munge"

HOST=$(hostname -s)
read -r CPUS MEM < <(slurmd -C 2>/dev/null | awk '/^NodeName/ {
    for (i = 1; i <= NF; i++) {split($i, kv, "="); v[kv[1]] = kv[2]}
    print v["CPUs"], v["RealMemory"]}')
# config_overrides (below) lets the node advertise at least 2 CPUs / 16 GB, so the rules' requests always fit.
CPUS=$(( ${CPUS:-2} > 2 ? ${CPUS:-2} : 2 ))
MEM=$(( ${MEM:-16000} > 16000 ? ${MEM:-16000} : 16000 ))

cat >"$STATE/slurm.conf" <<EOF
# Test cluster written by tests/slurm/setup.sh: one node, everything under $STATE.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge/munge.socket
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SwitchType=switch/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# for accounting connections the munge socket is read from here (slurm.conf(5), AccountingStoragePass), not AuthInfo
AccountingStoragePass=$STATE/munge/munge.socket
JobCompType=jobcomp/none
# sacct shows the comment the plugin sets on each job (rule and wildcards)
AccountingStoreFlags=job_comment
MinJobAge=300
InactiveLimit=0
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

cat >"$STATE/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$STATE/munge/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
chmod 600 "$STATE/slurmdbd.conf"
export SLURM_CONF=$STATE/slurm.conf
# snakemake-executor-plugin-slurm-jobstep (0.6.1) strips every SLURM_* variable but the job's identity from the
# environment of its `srun`, SLURM_CONF included; a real cluster's srun finds /etc/slurm/slurm.conf, ours would not.
# This srun, first on the PATH the jobs inherit, puts SLURM_CONF back.
mkdir -p "$STATE/bin"
printf '#!/bin/sh\n# srun with the test cluster config (tests/slurm/setup.sh)\nSLURM_CONF=%q exec %q "$@"\n' \
    "$SLURM_CONF" "$(command -v srun)" >"$STATE/bin/srun"
chmod +x "$STATE/bin/srun"
printf 'export SLURM_CONF=%q\nexport PATH=%q:$PATH:/usr/sbin\n' "$SLURM_CONF" "$STATE/bin" >"$STATE/env.sh"

# --- 3. munge ----------------------------------------------------------------------------------------------------
dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$STATE/munge/munge.key"
munged --force --socket="$STATE/munge/munge.socket" --key-file="$STATE/munge/munge.key" \
    --pid-file="$STATE/run/munged.pid" --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munged.seed" \
    >>"$STATE/log/munged.log" 2>&1 || daemon_failed munged "$STATE/log/munged.log"
wait_for 10 munged sh -c "munge -S '$STATE/munge/munge.socket' -n | unmunge -S '$STATE/munge/munge.socket'" \
    || daemon_failed munged "$STATE/log/munged.log"

# --- 4. MariaDB (private datadir, TCP on 127.0.0.1 only) ---------------------------------------------------------
timeout 60 mariadb-install-db --no-defaults --datadir="$STATE/db/data" --user=root --skip-test-db \
    --auth-root-authentication-method=normal >"$STATE/log/mariadb-install.log" 2>&1 \
    || daemon_failed mariadb-install-db "$STATE/log/mariadb-install.log"
cat >"$STATE/db/init.sql" <<'EOF'
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
setsid mariadbd --no-defaults --user=root --datadir="$STATE/db/data" --socket="$STATE/db/mysqld.sock" \
    --bind-address=127.0.0.1 --port="$DB_PORT" --pid-file="$STATE/run/mariadbd.pid" --init-file="$STATE/db/init.sql" \
    --skip-name-resolve --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 \
    --log-error="$STATE/log/mariadbd.log" \
    </dev/null >/dev/null 2>&1 &
wait_for 30 mariadbd mariadb --no-defaults -h 127.0.0.1 -P "$DB_PORT" -u slurm -pslurm -e "SELECT 1" \
    || daemon_failed mariadbd "$STATE/log/mariadbd.log"

# --- 5. slurmdbd, then the accounting records, then slurmctld and slurmd -----------------------------------------
slurmdbd >>"$STATE/log/slurmdbd.log" 2>&1 || daemon_failed slurmdbd "$STATE/log/slurmdbd.log"
wait_for 30 slurmdbd timeout 5 sacctmgr -n list cluster || daemon_failed slurmdbd "$STATE/log/slurmdbd.log"
timeout 20 sacctmgr -i add cluster "$CLUSTER" >/dev/null
timeout 20 sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description=test Organization=test >/dev/null
timeout 20 sacctmgr -i add user root Account="$ACCOUNT" Cluster="$CLUSTER" DefaultAccount="$ACCOUNT" >/dev/null
slurmctld >>"$STATE/log/slurmctld.log" 2>&1 || daemon_failed slurmctld "$STATE/log/slurmctld.log"
wait_for 30 slurmctld timeout 5 scontrol ping || daemon_failed slurmctld "$STATE/log/slurmctld.log"
slurmd -N "$HOST" >>"$STATE/log/slurmd.log" 2>&1 || daemon_failed slurmd "$STATE/log/slurmd.log"
node_idle() { [[ $(timeout 5 sinfo -h -n "$HOST" -o %t) == idle* ]]; }
wait_for 30 "node $HOST" node_idle \
    || daemon_failed "slurmd (node not idle: $(sinfo -h -o '%t %E' 2>&1))" "$STATE/log/slurmd.log"
# the cluster must be registered with slurmdbd before sacct can show its jobs
registered() { timeout 5 sacctmgr -n -P list cluster format=cluster,controlport | grep -q "^$CLUSTER|$CTLD_PORT\$"; }
wait_for 20 accounting registered \
    || daemon_failed "slurmctld registration with slurmdbd" "$STATE/log/slurmctld.log"
log "cluster $CLUSTER ready: partition $PARTITION, account $ACCOUNT, node $HOST (${CPUS} CPUs, ${MEM} MB)"
