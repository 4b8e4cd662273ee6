#!/usr/bin/env bash
# One prepared command for a GPU machine: the learning benchmark (scripts/bench_learning.py)
# for the default and the variants the learning issue compares, many runs at a time, each
# variant under its own time limit so that a slow one cannot take the others' time. Every
# variant writes its JSON after each run, so a variant cut by its limit keeps what it ran.
#
# Order (most needed first): the default with --trace (every validation's network also scored
# on validation halves and test, for scripts/replay_selection.py), more real-data seeds with
# --trace, then one variant per line of VARIANTS (6 seeds each). The limits add up to 530 s.
#
# Usage: bash scripts/gpu_learning.sh    (env: PYTHON=python3, OUT=<folder for the results>,
#        JOBS=15, DATA_DIR=.devdata, QUICK=1 for a 1-seed, 20-episode dry run on any machine)
# The results come as two files in $OUT, summary.txt and gpu_learning.tgz (every JSON and log):
# the device tool returns at most 8 files from a run, and a variant makes two.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PY=${PYTHON:-python3}
RESULTS=${OUT:-$(mktemp -d)}
LOGS=$(mktemp -d)
JOBS=${JOBS:-15}
DATA_DIR=${DATA_DIR:-.devdata}
mkdir -p "$RESULTS"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if [ -d "$REPO/.gpu_carry" ]; then
    export PYTHONPATH="$PYTHONPATH:$REPO/.gpu_carry"
fi
export OMP_NUM_THREADS=1
START=$(date +%s)
exec > >(tee "$RESULTS/summary.txt") 2>&1
SIZE=()
if [ "${QUICK:-0}" = 1 ]; then
    SIZE=(--seeds 1 --episodes 20 --markets default real_q4)
fi

bench() {  # bench NAME LIMIT_S ARGS...
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s, at $(($(date +%s) - START)) s) =="
    timeout "$limit" "$PY" scripts/bench_learning.py --jobs "$JOBS" --data-dir "$DATA_DIR" \
        --out "$LOGS/bl_$name.json" "$@" >"$LOGS/bl_$name.log" 2>&1
    local rc=$?
    grep -E '^\| (default|hard|planted|real_q1|real_q4) ' "$LOGS/bl_$name.log" || tail -n 3 "$LOGS/bl_$name.log"
    echo "rc=$rc"
    tar czf "$RESULTS/gpu_learning.tgz" -C "$LOGS" .  # after every variant: a cut run keeps them
}

echo "== CUDA sampled validation = CPU backtest (limit 45 s) =="
timeout 45 "$PY" -m pytest tests/test_device.py -q -p no:cacheprovider \
    -k "backtests_on_cpu" >"$LOGS/test_device.txt" 2>&1
tail -n 2 "$LOGS/test_device.txt"

bench default 150 --trace "${SIZE[@]}"
if [ "${QUICK:-0}" = 1 ]; then
    bench real_more 60 --trace --first-seed 10 "${SIZE[@]}"
else
    bench real_more 60 --trace --first-seed 10 --markets real_q1 real_q4
fi
VARIANTS=(  # measured on an H200 before (README "What to expect"): baseline, decay, n_envs=128
    "expected trainer.estimator=expected"
    "reinforce trainer.estimator=reinforce"
    "greedy trainer.eval_policy=greedy"
    "constant trainer.entropy_coef_final=null"
    "n_envs128 trainer.n_envs=128"
)
for line in "${VARIANTS[@]}"; do
    read -r name override <<<"$line"
    if [ "${QUICK:-0}" = 1 ]; then
        bench "$name" 60 "$override" "${SIZE[@]}"
    else
        seeds=6  # 30 runs: two waves of 15
        if [ "$name" = n_envs128 ]; then seeds=3; fi  # 4x the batch: one wave of 15
        bench "$name" 55 "$override" --seeds "$seeds"
    fi
done
echo "total $(($(date +%s) - START)) s"
echo "JSON and logs: $RESULTS/gpu_learning.tgz (tar xzf it; python scripts/bench_learning.py --table bl_<name>.json)"
