#!/usr/bin/env bash
# A one-node SLURM cluster with one fake A100 for tests/test_slurm.py (`snakemake --profile slurm`).
# Two partitions on the same node, `main` (default) and `gpu`, so the test can send CPU and GPU
# jobs to different partitions as on a real cluster.
#
# Debian 12 as root, no systemd needed: installs slurmctld, slurmd, slurm-client and munge with
# apt-get, writes /etc/slurm/{slurm.conf,gres.conf}, starts munged, slurmctld and slurmd by hand
# and waits until the node is idle. Idempotent: when the cluster already answers with a usable
# node it does nothing, and it only starts the daemons that are not running.
#
# Stop it again: for p in /run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid; do kill "$(cat $p)"; done
set -euo pipefail

log() { echo "slurm-up: $*" >&2; }

node_ready() {
    command -v sinfo >/dev/null 2>&1 || return 1
    sinfo -h -o %T 2>/dev/null | grep -Eqx 'idle|mixed|allocated|completing' || return 1
    sinfo -h -p gpu -o %P 2>/dev/null | grep -q gpu
}

if node_ready; then
    log "SLURM is already up: $(sinfo -h -o '%P %a %D %T %N' | head -1)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    log "needs root (apt-get, /etc/slurm, the daemons)"
    exit 1
fi

# 1. Packages (the postinst scripts start nothing without systemd; about 20 s).
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
    || ! command -v munged >/dev/null; then
    log "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi

# 2. The host name must resolve, since it is both SlurmctldHost and NodeName.
H=$(hostname -s)
if ! getent hosts "$H" >/dev/null; then
    log "adding $H to /etc/hosts"
    echo "127.0.0.1 $H" >>/etc/hosts
fi

# 3. Munge key (normally created by the munge postinst).
if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    su -s /bin/sh munge -c "mungekey -c"
fi

# 4. Configuration. RealMemory at 90% of MemTotal: more than the node reports drains it.
#    DefMemPerCPU: without it a job lacking --mem takes the whole node (CR_Core_Memory).
#    No accounting: the profile must then be run with --slurm-status-command squeue
#    (tests/test_slurm.py does), and MinJobAge stays at its default of 300 s, which squeue needs.
CPUS=$(nproc)
MEM_MB=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
install -d -m 0755 /etc/slurm
cat >/etc/slurm/slurm.conf <<EOF
# Written by .ci/slurm-up.sh: a one-node test cluster with one fake a100 GPU.
ClusterName=ci
SlurmctldHost=$H
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
NodeName=$H CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:a100:1 State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL Default=NO MaxTime=INFINITE State=UP
EOF
cat >/etc/slurm/gres.conf <<EOF
# Written by .ci/slurm-up.sh: a stand-in device, the GPU only counts for scheduling.
AutoDetect=off
NodeName=$H Name=gpu Type=a100 File=/dev/null
EOF
install -d -o slurm -g slurm -m 0755 /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm

# 5. Daemons, each only when its PID file does not name a live process.
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
install -d -o munge -g munge -m 0755 /run/munge
if ! alive /run/munge/munged.pid; then
    log "starting munged"
    su -s /bin/sh munge -c /usr/sbin/munged
fi
for _ in $(seq 50); do munge -n | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
munge -n | unmunge >/dev/null
if ! alive /run/slurmctld.pid; then
    log "starting slurmctld"
    /usr/sbin/slurmctld
else
    log "slurmctld is running: rereading slurm.conf"
    scontrol reconfigure
fi
if ! alive /run/slurmd.pid; then
    log "starting slurmd"
    /usr/sbin/slurmd
fi

# 6. Wait for the node (under a second normally).
for _ in $(seq 60); do
    if node_ready; then
        log "up: $(sinfo -h -o '%P %a %D %T %N' | head -1)"
        exit 0
    fi
    sleep 1
done
log "the node did not become idle; sinfo says:"
sinfo -N -l >&2 || true
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
