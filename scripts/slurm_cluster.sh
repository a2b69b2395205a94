#!/usr/bin/env bash
# A local SLURM cluster on this one machine, for the tests (tests/tests/slurm.rs) and for trying
# scripts/moco.sbatch by hand: munged, slurmctld and one or two slurmd ("logical nodes" n1, n2,
# both on this host), all started by hand from a private folder, so a real SLURM or munge
# installation (/etc/slurm, /run/munge, ports 6817/6818) is left alone.
#
#   scripts/slurm_cluster.sh up [--nodes 1|2]   # install the packages if missing (root), start
#   eval "$(scripts/slurm_cluster.sh env)"      # SLURM_CONF for sbatch, srun, sinfo, ...
#   scripts/slurm_cluster.sh status
#   scripts/slurm_cluster.sh down               # cancel the jobs, stop every daemon it started
#
# `up` is idempotent: a cluster already up with the same node count is left running; one with
# another node count is taken down and brought up again. It prints the `export SLURM_CONF=...`
# line last. Needs root (the daemons, the package install, two lines in /etc/hosts).
#
# Why it looks like this (Debian bookworm's slurm-wlm 22.05, checked on 2026-12-05):
# - No systemd here: the packages' scripts start nothing, so munged (as the munge user, with its
#   own key and socket), slurmctld and slurmd are started by hand.
# - No cgroups: ProctrackType=proctrack/linuxproc and TaskPlugin=task/none; accounting off
#   (no sacct: `scontrol show job`), MailProg=/bin/true.
# - Two logical nodes on one host: NodeName=n[1-2] NodeAddr=127.0.0.1 with a port each and
#   `slurmd -N n1`, `slurmd -N n2` (Debian builds SLURM with multiple-slurmd support).
#   SlurmdParameters=config_overrides lets each claim 4 CPUs whatever the machine has.
# - The workers find the rendezvous at the first host of SLURM_NODELIST (proto/src/env.rs), as
#   on a real cluster, so n1 and n2 must resolve: `up` adds "127.0.0.1 n1 n2" to /etc/hosts
#   (one line, marked, removed by `down`), and refuses when those names already mean something.
#
# MOCO_SLURM_DIR (default /tmp/moco-slurm) holds the config, keys, sockets, state and logs.
set -euo pipefail

DIR=${MOCO_SLURM_DIR:-/tmp/moco-slurm}
CONF=$DIR/slurm.conf
CTLD_PORT=${MOCO_SLURM_PORT:-16817}      # slurmctld; the nodes take the next ports
HOSTS_MARK="# moco-rs scripts/slurm_cluster.sh"
PACKAGES=(slurmctld slurmd slurm-client munge)

say() { echo "slurm_cluster: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

need_root() {
    [[ $(id -u) == 0 ]] || die "needs root (the daemons, the package install, /etc/hosts); run it with sudo"
}

install_packages() {
    local missing=()
    for bin in slurmctld slurmd sinfo munged mungekey; do
        command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
    done
    [[ ${#missing[@]} == 0 ]] && return 0
    command -v apt-get >/dev/null 2>&1 ||
        die "${missing[*]} missing and no apt-get here: install SLURM (slurmctld, slurmd, client) and munge by hand"
    say "installing ${PACKAGES[*]} (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine may have no package lists yet: update once, only when the install fails.
    if ! apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >"$DIR/apt.log" 2>&1; then
        apt-get update -q >>"$DIR/apt.log" 2>&1 || true
        apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$DIR/apt.log" 2>&1 ||
            die "apt-get install ${PACKAGES[*]} failed (see $DIR/apt.log)"
    fi
}

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Node count of the config on disk (0: none).
conf_nodes() {
    [[ -f $CONF ]] || {
        echo 0
        return
    }
    sed -n 's/^# moco-nodes=//p' "$CONF"
}

node_names() { # n1 [n2]
    local n=$1 i
    for ((i = 1; i <= n; i++)); do printf 'n%d ' "$i"; done
}

# The daemons this script starts, as pid files.
pidfiles() {
    local n
    n=$(conf_nodes)
    echo "$DIR/munge/munged.pid" "$DIR/slurmctld.pid"
    for node in $(node_names "${n:-0}"); do echo "$DIR/slurmd-$node.pid"; done
}

write_conf() {
    local nodes=$1 host last_port
    host=$(hostname -s)
    last_port=$((CTLD_PORT + nodes))
    local nodelist=n1
    [[ $nodes == 2 ]] && nodelist="n[1-2]"
    local ports=$((CTLD_PORT + 1))
    [[ $nodes == 2 ]] && ports="$((CTLD_PORT + 1))-$last_port"
    mkdir -p "$DIR/ctld" "$DIR/log" "$DIR/spool"
    cat >"$CONF.tmp" <<EOF
# Written by scripts/slurm_cluster.sh up --nodes $nodes: a local test cluster.
# moco-nodes=$nodes
ClusterName=moco-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$((CTLD_PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket.2
CredType=cred/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=300
NodeName=$nodelist NodeHostname=$host NodeAddr=127.0.0.1 Port=$ports CPUs=4 State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

# n1, n2 -> 127.0.0.1 in /etc/hosts (the rendezvous address is a node name, as on a real cluster).
add_hosts() {
    grep -qF "$HOSTS_MARK" /etc/hosts && return 0
    local n addr
    for n in n1 n2; do
        addr=$( (getent ahostsv4 "$n" 2>/dev/null || true) | awk 'NR==1{print $1}')
        [[ -z $addr || $addr == 127.* ]] ||
            die "the name $n already resolves to $addr here; the local cluster's nodes are called n1 and n2"
    done
    # /etc/hosts may be a bind mount (containers): rewrite it in place, not by rename.
    printf '127.0.0.1 n1 n2 %s\n' "$HOSTS_MARK" >>/etc/hosts
}

remove_hosts() {
    grep -qF "$HOSTS_MARK" /etc/hosts || return 0
    local kept
    kept=$(grep -vF "$HOSTS_MARK" /etc/hosts)
    printf '%s\n' "$kept" >/etc/hosts
}

start_munge() {
    pid_alive "$DIR/munge/munged.pid" && return 0
    mkdir -p "$DIR/munge"
    chown munge:munge "$DIR/munge"
    chmod 0755 "$DIR/munge"
    if [[ ! -s $DIR/munge/munge.key ]]; then
        runuser -u munge -- mungekey --create --keyfile="$DIR/munge/munge.key"
    fi
    runuser -u munge -- munged \
        --socket="$DIR/munge/munge.socket.2" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
        --seed-file="$DIR/munge/munged.seed" </dev/null >>"$DIR/munge/munged.out" 2>&1 ||
        die "munged did not start (see $DIR/munge/munged.log and munged.out)"
}

nodes_idle() { # true when sinfo lists every node of the config as idle
    local want=$1 got
    got=$(SLURM_CONF=$CONF timeout 5 sinfo -h -N -o '%N %t' 2>/dev/null | awk '$2=="idle"' | wc -l) || return 1
    [[ $got == "$want" ]]
}

up() {
    local nodes=$1
    need_root
    mkdir -p "$DIR"
    chmod 0755 "$DIR"
    install_packages
    local have
    have=$(conf_nodes)
    if [[ $have != 0 && $have != "$nodes" ]]; then
        say "the cluster has $have node(s), $nodes asked: restarting it"
        down
    fi
    if [[ $(conf_nodes) == "$nodes" ]] && nodes_idle "$nodes" &&
        [[ $(status_daemons | grep -c running) == $((2 + nodes)) ]]; then
        say "already up: $nodes node(s) idle"
        echo "export SLURM_CONF=$CONF"
        return 0
    fi
    add_hosts
    write_conf "$nodes"
    start_munge
    export SLURM_CONF=$CONF
    if ! pid_alive "$DIR/slurmctld.pid"; then
        # -c: start from a clean state (no jobs, nodes, reservations of an earlier cluster).
        slurmctld -c -f "$CONF" </dev/null >>"$DIR/log/daemons.out" 2>&1 ||
            die "slurmctld did not start (see $DIR/log/slurmctld.log and daemons.out)"
    fi
    for node in $(node_names "$nodes"); do
        mkdir -p "$DIR/spool/$node"
        pid_alive "$DIR/slurmd-$node.pid" && continue
        slurmd -N "$node" -f "$CONF" </dev/null >>"$DIR/log/daemons.out" 2>&1 ||
            die "slurmd -N $node did not start (see $DIR/log/slurmd-$node.log and daemons.out)"
    done
    local i
    for ((i = 0; i < 300; i++)); do
        nodes_idle "$nodes" && break
        sleep 0.1
    done
    nodes_idle "$nodes" || {
        SLURM_CONF=$CONF sinfo -N >&2 || true
        die "the nodes did not become idle within 30 s (logs in $DIR/log)"
    }
    say "up: $(node_names "$nodes")idle ($DIR)"
    echo "export SLURM_CONF=$CONF"
}

status_daemons() {
    local f
    for f in $(pidfiles); do
        if pid_alive "$f"; then
            echo "$(basename "$f" .pid): running (pid $(cat "$f"))"
        else
            echo "$(basename "$f" .pid): not running"
        fi
    done
}

status() {
    if [[ $(conf_nodes) == 0 ]]; then
        echo "no local cluster configured in $DIR"
        return 1
    fi
    local daemons
    daemons=$(status_daemons)
    echo "$daemons"
    SLURM_CONF=$CONF timeout 5 sinfo -N 2>&1 || true
    SLURM_CONF=$CONF timeout 5 squeue 2>&1 || true
    # Exit status: 0 only when every daemon of the config runs.
    ! grep -q "not running" <<<"$daemons"
}

stop_pidfile() { # SIGTERM, then SIGKILL after 10 s
    local f=$1 pid i
    [[ -f $f ]] || return 0
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$f"
}

# slurmstepd processes of this cluster (their sockets live in our spool folder).
our_stepds() {
    local p
    for p in $(pgrep -x slurmstepd 2>/dev/null || true); do
        if ls -l "/proc/$p/fd" 2>/dev/null | grep -qF "$DIR/"; then echo "$p"; fi
    done
}

down() {
    need_root
    if [[ $(conf_nodes) != 0 ]]; then
        export SLURM_CONF=$CONF
        # Jobs first, so their tasks end through SLURM (which stops the whole step).
        if pid_alive "$DIR/slurmctld.pid"; then
            timeout 10 scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
            timeout 10 scancel --full --quiet $(timeout 5 squeue -h -o %i 2>/dev/null) 2>/dev/null || true
            local i
            for ((i = 0; i < 150; i++)); do
                [[ -z $(timeout 5 squeue -h -t R,CG -o %i 2>/dev/null) && -z $(our_stepds) ]] && break
                sleep 0.1
            done
        fi
        local f
        for f in $(pidfiles); do
            [[ $f == */munged.pid ]] || stop_pidfile "$f"
        done
        for p in $(our_stepds); do
            say "stopping a leftover slurmstepd (pid $p)"
            kill -KILL "$p" 2>/dev/null || true
        done
        stop_pidfile "$DIR/munge/munged.pid"
        rm -f "$CONF"
    fi
    remove_hosts
    say "down"
}

cmd=${1:-}
shift || true
case $cmd in
up)
    nodes=1
    while [[ $# -gt 0 ]]; do
        case $1 in
        --nodes)
            nodes=${2:-}
            shift 2 || die "--nodes needs a value (1 or 2)"
            ;;
        --nodes=*)
            nodes=${1#--nodes=}
            shift
            ;;
        *) die "unknown argument $1 (up [--nodes 1|2])" ;;
        esac
    done
    [[ $nodes == 1 || $nodes == 2 ]] || die "--nodes must be 1 or 2, not '$nodes'"
    up "$nodes"
    ;;
down) down ;;
status) status ;;
env) echo "export SLURM_CONF=$CONF" ;;
*)
    echo "usage: $0 up [--nodes 1|2] | down | status | env" >&2
    exit 2
    ;;
esac
