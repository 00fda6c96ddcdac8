#!/usr/bin/env bash
# A one-node Slurm cluster for the submission layer's tests, as
# /work/shared/notes/slurm.md describes it. Idempotent: when `sinfo` already
# answers with a node that can run jobs, it does nothing. Needs root (apt-get,
# munge key, daemons). Never stops anything; daemons it starts keep running
# for the rest of the CI job.
#
#   .ci/slurm-setup.sh            install if missing, configure, start, wait
#
# Exit status 0 when the cluster answers, 1 otherwise (CI then fails, because
# the Slurm tests call service_missing() when sinfo is absent or dead).
set -uo pipefail

say() { printf 'slurm-setup: %s\n' "$*"; }

cluster_up() {
  command -v sinfo >/dev/null 2>&1 || return 1
  # A node state of idle, mix, alloc or completing means slurmctld and slurmd
  # both answer and the node accepts work.
  sinfo -h -o '%T' 2>/dev/null | grep -Eq '^(idle|mixed|allocated|completing)'
}

if cluster_up; then
  say "already running: $(sinfo -h -o '%P %D %T' | tr '\n' ' ')"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  say "not root: cannot install or start Slurm"
  exit 1
fi

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  say "installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get install -y -qq slurm-wlm munge >/dev/null; } ||
    { say "apt-get install failed"; exit 1; }
fi

mkdir -p /etc/munge /var/run/munge /var/lib/munge /var/log/munge \
  /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /etc/slurm
[ -f /etc/munge/munge.key ] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
chown -R munge:munge /etc/munge /var/run/munge /var/lib/munge /var/log/munge
chmod 400 /etc/munge/munge.key

if ! pgrep -x munged >/dev/null 2>&1; then
  say "starting munged"
  su -s /bin/sh munge -c /usr/sbin/munged || { say "munged did not start"; exit 1; }
fi

H=$(hostname)
CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 - 1024 ))
[ "$MEM" -gt 256 ] || MEM=256
CONF=/etc/slurm/slurm.conf
NEW=$(mktemp)
cat > "$NEW" <<CONF
ClusterName=local
SlurmctldHost=$H
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
NodeName=$H CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
if ! cmp -s "$NEW" "$CONF"; then
  say "writing $CONF"
  cp "$NEW" "$CONF"
fi
rm -f "$NEW"

if ! pgrep -x slurmctld >/dev/null 2>&1; then
  say "starting slurmctld"
  /usr/sbin/slurmctld || { say "slurmctld did not start (see /var/log/slurm/slurmctld.log)"; exit 1; }
fi
if ! pgrep -x slurmd >/dev/null 2>&1; then
  say "starting slurmd"
  /usr/sbin/slurmd || { say "slurmd did not start (see /var/log/slurm/slurmd.log)"; exit 1; }
fi

for _ in $(seq 1 30); do
  if cluster_up; then
    say "up: $(sinfo -h -o '%P %D %T' | tr '\n' ' ')"
    exit 0
  fi
  sleep 1
done
# A node left down by an earlier run comes back with an explicit resume.
scontrol update NodeName="$H" State=RESUME >/dev/null 2>&1 || true
sleep 2
if cluster_up; then
  say "up after resume: $(sinfo -h -o '%P %D %T' | tr '\n' ' ')"
  exit 0
fi
say "the cluster did not come up:"
sinfo 2>&1 || true
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log 2>/dev/null || true
exit 1
