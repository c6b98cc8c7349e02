#!/usr/bin/env bash
# Stop the test cluster that setup.sh started under STATE_DIR, by its pid files only (never by name), and wait for it.
#
# Usage: tests/slurm/teardown.sh STATE_DIR [--purge]
#   Cancels the cluster's jobs, then stops slurmd+slurmctld, slurmdbd, mariadbd+munged (SIGTERM, then SIGKILL
#   after 15 s). A pid is signalled only if its command name is the expected daemon. --purge also deletes STATE_DIR.
#   Safe to run twice, or on a half-started cluster. Exit status 0 unless a daemon survived SIGKILL.
set -uo pipefail

STATE=${1:?usage: teardown.sh STATE_DIR [--purge]}
[[ -d $STATE ]] || exit 0
STATE=$(cd "$STATE" && pwd)
export PATH=$PATH:/usr/sbin
export SLURM_CONF=$STATE/slurm.conf

# pid_of NAME: the pid recorded for daemon NAME, if that process is alive and really is NAME.
pid_of() {
    local pid
    pid=$(cat "$STATE/run/$1.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] && echo "$pid"
}

# 1. jobs first, while slurmctld and slurmd can still clean up their steps
if pid_of slurmctld >/dev/null; then
    timeout 10 scancel --full --quiet --cluster=fmxtest --user=root >/dev/null 2>&1 || true
    for _ in $(seq 50); do
        [[ -z $(timeout 5 squeue -h -o %i 2>/dev/null) ]] && break
        sleep 0.2
    done
fi

status=0
# stop_group DAEMON...: SIGTERM them together, wait up to 15 s, then SIGKILL; groups go in dependency order
stop_group() {
    local daemon pid pids=() names=()
    for daemon in "$@"; do
        pid=$(pid_of "$daemon") || continue
        kill -TERM "$pid" 2>/dev/null && pids+=("$pid") && names+=("$daemon")
    done
    for _ in $(seq 75); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.2
    done
    for i in "${!pids[@]}"; do
        pid=${pids[$i]}
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null
            sleep 0.5
            kill -0 "$pid" 2>/dev/null && { echo "teardown: ${names[$i]} (pid $pid) survived SIGKILL" >&2; status=1; }
        fi
    done
    for daemon in "$@"; do rm -f "$STATE/run/$daemon.pid"; done
}
stop_group slurmd slurmctld    # the cluster (slurmctld sends its last records to slurmdbd)
stop_group slurmdbd            # accounting, once nothing reports to it
stop_group mariadbd munged     # what slurmdbd and the daemons authenticate and store with
[[ ${2:-} == --purge && $status == 0 ]] && rm -rf "$STATE"
exit $status
