#!/bin/bash
# A private one-node Slurm cluster (munged, slurmctld, slurmd) in one directory, for trying the
# Slurm profile (profiles/slurm) on a real scheduler; tests/test_slurm_cluster.py uses it.
#
#   tests/slurm/cluster.sh start DIR    # DIR empty or absent; prints the SLURM_CONF to export
#   SLURM_CONF=DIR/slurm.conf srun hostname
#   tests/slurm/cluster.sh stop DIR     # cancels every job, stops the daemons; DIR stays
#
# Everything lives in DIR: its own munge key and socket (a host's munged and /etc/munge are
# left alone), slurm.conf, state, spool, logs and pid files; ports are free ones picked at
# start.  The node is this host (hostname -s) with its cores and memory less a margin, one
# partition (debug), no accounting database.  Needs root (SlurmUser=root).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MEM_MARGIN_MB=1024      # left to the host: the node offers MemTotal less this
START_TIMEOUT_S=60

die() { echo "cluster.sh: $*" >&2; exit 1; }

need_tools() {
    local t missing=()
    for t in munged slurmctld slurmd sinfo squeue scancel; do
        command -v "$t" >/dev/null || missing+=("$t")
    done
    [ ${#missing[@]} -eq 0 ] || die "not installed: ${missing[*]} (apt-get install slurmctld slurmd munge)"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

node_memory_mb() {
    local total_kb
    total_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    echo $(( total_kb / 1024 - MEM_MARGIN_MB ))
}

render_conf() {
    local dir=$1 ctld_port slurmd_port
    ctld_port=$(free_port)
    slurmd_port=$(free_port)
    [ "$ctld_port" != "$slurmd_port" ] || slurmd_port=$(free_port)
    sed -e "s|@DIR@|$dir|g" -e "s|@HOST@|$(hostname -s)|g" \
        -e "s|@CTLD_PORT@|$ctld_port|g" -e "s|@SLURMD_PORT@|$slurmd_port|g" \
        -e "s|@CPUS@|$(nproc)|g" -e "s|@MEM_MB@|$(node_memory_mb)|g" \
        "$HERE/slurm.conf.in" > "$dir/slurm.conf.tmp"
    mv "$dir/slurm.conf.tmp" "$dir/slurm.conf"
}

start_munged() {
    local dir=$1
    # A fresh key of this cluster only; munged wants it private to its user.
    (umask 077 && dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none)
    munged --key-file="$dir/munge.key" --socket="$dir/munge.socket" --pid-file="$dir/munged.pid" \
        --log-file="$dir/munged.log" --seed-file="$dir/munged.seed" \
        || die "munged did not start: see $dir/munged.log"
}

wait_node_idle() {
    local dir=$1 state="" waited=0
    while [ $waited -lt $START_TIMEOUT_S ]; do
        state=$(sinfo -h -N -o %t 2>/dev/null || true)
        [ "$state" = idle ] && return 0
        sleep 1
        waited=$((waited + 1))
    done
    die "the node is '${state:-not answering}' after ${START_TIMEOUT_S}s, not idle: see $dir/slurmctld.log and $dir/slurmd.log"
}

start() {
    local dir=$1
    need_tools
    [ "$(id -u)" -eq 0 ] || die "needs root: slurm.conf says SlurmUser=root"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    [ -z "$(ls -A "$dir")" ] || die "$dir is not empty: give a new directory"
    chmod 755 "$dir"     # munged: every client must reach its socket
    mkdir -p "$dir/state" "$dir/spool"
    render_conf "$dir"
    export SLURM_CONF=$dir/slurm.conf
    start_munged "$dir"
    slurmctld -f "$SLURM_CONF" || die "slurmctld did not start: see $dir/slurmctld.log"
    slurmd -f "$SLURM_CONF" || die "slurmd did not start: see $dir/slurmd.log"
    wait_node_idle "$dir"
    echo "SLURM_CONF=$SLURM_CONF"
}

cancel_all_jobs() {
    local waited=0 left
    squeue -h -o %i | xargs -r scancel 2>/dev/null || true
    while [ $waited -lt 30 ]; do
        left=$(squeue -h -t PENDING,RUNNING,SUSPENDED,COMPLETING,CONFIGURING -o %i 2>/dev/null || true)
        [ -z "$left" ] && return 0
        sleep 1
        waited=$((waited + 1))
    done
    echo "cluster.sh: jobs still in the queue after 30 s: $left" >&2
}

stop_daemon() {
    local pidfile=$1 pid waited=0
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null && [ $waited -lt 100 ]; do
        sleep 0.1
        waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
}

stop() {
    local dir=$1
    [ -f "$dir/slurm.conf" ] || die "$dir holds no cluster (no slurm.conf)"
    export SLURM_CONF=$dir/slurm.conf
    if [ -s "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
        cancel_all_jobs
    fi
    stop_daemon "$dir/slurmd.pid"
    stop_daemon "$dir/slurmctld.pid"
    stop_daemon "$dir/munged.pid"
}

case "${1:-}" in
    start) [ $# -eq 2 ] || die "usage: $0 start DIR"; start "$2" ;;
    stop) [ $# -eq 2 ] || die "usage: $0 stop DIR"; stop "$2" ;;
    *) die "usage: $0 start|stop DIR" ;;
esac
