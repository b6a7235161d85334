#!/usr/bin/env bash
# Slurm integration run of sharded inference (issue #9), on a one-node cluster on localhost.
#
#   sudo scripts/slurm-integration.sh [WORKDIR]
#
# Installs Debian's slurm-wlm if needed (root + apt), starts slurmctld and slurmd with a
# minimal config (auth/none: a single-host test cluster, no munge), writes a mock catalogue,
# submits a job array with `popcosmos-cli slurm --submit`, kills one task once it has written
# its first part and requeues it, waits for the array, merges the shards and runs the same
# manifest unsharded for comparison. The checks (every galaxy exactly once, bit-identical
# to the single-process run, the killed task resumed) are in tests/slurm.rs, which runs this
# script; on its own the script fails if any step (merge's duplicate/gap checks included)
# fails.
#
# Environment: POPCOSMOS_CLI (binary; default: build target/release/popcosmos-cli),
# GALAXIES (2000), SHARDS (4), KILL_SHARD (1), TIMEOUT_S (900).
# Leaves in WORKDIR: mock.csv, sharded.yaml, single.yaml, out/ (shards + merge), single/,
# slurm/ (config and daemon logs) and result.env (JOB, KILLED_AFTER_PARTS, ...).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$(mktemp -d /tmp/popcosmos-slurm.XXXXXX)}
GALAXIES=${GALAXIES:-2000}
SHARDS=${SHARDS:-4}
KILL_SHARD=${KILL_SHARD:-1}
TIMEOUT_S=${TIMEOUT_S:-900}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
log() { echo "[slurm-integration $(date +%T)] $*" >&2; }

CLI=${POPCOSMOS_CLI:-}
if [ -z "$CLI" ]; then
    (cd "$ROOT" && cargo build --release -p popcosmos-cli)
    CLI="$ROOT/target/release/popcosmos-cli"
fi

# 1. Slurm.
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null; then
    if [ "$(id -u)" != 0 ]; then
        echo "slurm-wlm is not installed and installing it needs root" >&2
        exit 2
    fi
    log "installing slurm-wlm"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y slurm-wlm >/dev/null || { apt-get update >/dev/null && apt-get install -y slurm-wlm >/dev/null; }
fi
if [ "$(id -u)" != 0 ]; then
    echo "slurmd must run as root (it starts jobs as their user)" >&2
    exit 2
fi

SL="$WORK/slurm"
rm -rf "$SL" "$WORK/out" "$WORK/single"
mkdir -p "$SL/state" "$SL/spool"
HOST=$(hostname -s)
CPUS=$(nproc)
cat >"$SL/slurm.conf" <<EOF
# Minimal one-node test cluster (written by scripts/slurm-integration.sh).
ClusterName=popcosmos-test
SlurmctldHost=$HOST(127.0.0.1)
AuthType=auth/none
CredType=cred/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$SL/state
SlurmdSpoolDir=$SL/spool
SlurmctldPidFile=$SL/slurmctld.pid
SlurmdPidFile=$SL/slurmd.pid
SlurmctldLogFile=$SL/slurmctld.log
SlurmdLogFile=$SL/slurmd.log
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
# Keep finished jobs visible to scontrol until the checks are done.
MinJobAge=3600
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$SL/slurm.conf"

stop_daemons() {
    [ -n "${JOB:-}" ] && scancel "$JOB" 2>/dev/null || true
    for d in slurmd slurmctld; do
        if [ -s "$SL/$d.pid" ]; then
            kill "$(cat "$SL/$d.pid")" 2>/dev/null || true
        fi
    done
}
trap stop_daemons EXIT

log "starting slurmctld and slurmd ($HOST, $CPUS CPUs)"
slurmctld -c
slurmd
for _ in $(seq 60); do
    if sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then break; fi
    sleep 1
done
sinfo -h -N -o '%N %T' | grep -qE ' (idle|mixed|allocated)' || {
    sinfo >&2 || true
    tail -20 "$SL/slurmctld.log" "$SL/slurmd.log" >&2
    exit 1
}

# 2. Mock catalogue and a tiny inference config (2,000 galaxies in a few minutes on 2 cores).
log "writing $GALAXIES mock galaxies"
"$CLI" mock -n "$GALAXIES" --seed 9 --errors templates -o "$WORK/mock.csv"
manifest() {
    cat <<EOF
survey: {name: cosmos}
catalogue: {path: $WORK/mock.csv, units: nanomaggies, flux_pattern: "flux_{band}", error_pattern: "fluxerr_{band}"}
prior: {kind: prospector-alpha}
sampler: {walkers: 32, steps: 10, burn_in: 5}
init: {library_size: 300, top_k: 4}
output: {dir: $1, format: parquet}
seed: 2026
galaxies_per_batch: 25
EOF
}
manifest "$WORK/out" >"$WORK/sharded.yaml"
manifest "$WORK/single" >"$WORK/single.yaml"

# 3. Submit the array (one CPU per task, so tasks queue on this node).
JOB=$("$CLI" slurm "$WORK/sharded.yaml" --array "$SHARDS" --cpus-per-task 1 --time 01:00:00 --submit)
log "submitted job array $JOB ($SHARDS tasks)"
T0=$(date +%s)
elapsed() { echo $(($(date +%s) - T0)); }

# 4. Kill one task mid-way (after its first part, before its last) and requeue it.
KDIR="$WORK/out/$(printf 'shard-%05d-of-%05d' "$KILL_SHARD" "$SHARDS")"
state() { scontrol show job "${JOB}_$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p' | head -1; }
parts() { find "$1" -maxdepth 1 -name 'part-*' 2>/dev/null | wc -l; }
until [ "$(parts "$KDIR")" -ge 1 ]; do
    [ "$(elapsed)" -lt "$TIMEOUT_S" ] || { log "timeout waiting for shard $KILL_SHARD"; exit 1; }
    s=$(state "$KILL_SHARD")
    case "$s" in COMPLETED | FAILED | CANCELLED) log "shard $KILL_SHARD ended ($s) before it could be killed"; exit 1 ;; esac
    sleep 0.1
done
scancel --full --signal=KILL "${JOB}_${KILL_SHARD}"
KILLED_AFTER_PARTS=$(parts "$KDIR")
for _ in $(seq 100); do
    case "$(state "$KILL_SHARD")" in RUNNING | COMPLETING) sleep 0.2 ;; *) break ;; esac
done
KILLED_STATE=$(state "$KILL_SHARD")
log "killed ${JOB}_${KILL_SHARD} after $KILLED_AFTER_PARTS part(s): $KILLED_STATE; requeueing"
scontrol requeue "${JOB}_${KILL_SHARD}"
# A requeued job is held back (BeginTime) for a while; let it start as soon as a CPU is free.
scontrol update jobid="${JOB}_${KILL_SHARD}" StartTime=now || true

# 5. Wait for every task to finish.
unfinished() {
    squeue -h -j "$JOB" -t all -o '%T' 2>/dev/null |
        grep -vqE '^(COMPLETED|FAILED|CANCELLED|TIMEOUT|OUT_OF_MEMORY|NODE_FAIL|BOOT_FAIL|DEADLINE)$'
}
while unfinished; do
    [ "$(elapsed)" -lt "$TIMEOUT_S" ] || { log "timeout waiting for the array"; squeue >&2; exit 1; }
    sleep 1
done
ARRAY_S=$(elapsed)
for i in $(seq 0 $((SHARDS - 1))); do
    s=$(state "$i")
    [ "$s" = COMPLETED ] || { log "task ${JOB}_$i ended $s"; cat "$WORK/out/slurm/"*"_$i.log" >&2 || true; exit 1; }
done
log "all $SHARDS tasks COMPLETED after ${ARRAY_S} s"

# 6. Merge (refuses duplicates and gaps), then the single-process reference.
"$CLI" merge "$WORK/out"
T1=$(date +%s)
RAYON_NUM_THREADS=${REFERENCE_THREADS:-2} "$CLI" run "$WORK/single.yaml" --quiet
SINGLE_S=$(($(date +%s) - T1))
log "single-process run: ${SINGLE_S} s"

cat >"$WORK/result.env" <<EOF
JOB=$JOB
SHARDS=$SHARDS
KILL_SHARD=$KILL_SHARD
KILLED_AFTER_PARTS=$KILLED_AFTER_PARTS
KILLED_STATE=$KILLED_STATE
ARRAY_SECONDS=$ARRAY_S
SINGLE_SECONDS=$SINGLE_S
EOF
log "done: $WORK"
