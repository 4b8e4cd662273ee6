#!/usr/bin/env bash
# One prepared command for a GPU machine: the device tests (CUDA variants included), the GPU
# benchmark, and a short summary, in under 7 minutes (each step has its own time limit).
#
# Needs python3 with torch (any recent CUDA build), numpy, pandas, pyarrow, scipy, matplotlib,
# tqdm and pytest. hydra-core, omegaconf and antlr4 may come in .gpu_carry/ (made with
# scripts/make_gpu_carry.sh on a machine that has them; see README "GPU check"). mlflow is
# not needed: with tracking=none nothing imports it. Without CUDA it still runs: the CUDA
# tests skip with a reason and the benchmark runs briefly on the CPU.
#
# Usage: bash scripts/gpu_check.sh    (env: PYTHON=python3, OUT=<folder for the full logs>)
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PY=${PYTHON:-python3}
LOGS=${OUT:-$(mktemp -d)}
mkdir -p "$LOGS"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if [ -d "$REPO/.gpu_carry" ]; then
    export PYTHONPATH="$PYTHONPATH:$REPO/.gpu_carry"
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
START=$(date +%s)

"$PY" - >"$LOGS/env.txt" 2>&1 <<'PYEOF'
import importlib.util
import sys

import torch


def have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a broken or blocked install counts as missing
        return False


print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}")
if torch.cuda.is_available():
    print(f"device: {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} visible)")
else:
    print("device: no CUDA device (CUDA tests skip, the benchmark runs on the CPU)")
need = ("hydra", "omegaconf", "numpy", "pandas", "pyarrow", "scipy", "matplotlib", "tqdm", "pytest")
missing = [m for m in need if not have(m)]
print(f"mlflow installed: {have('mlflow')} (not needed)")
if missing:
    print(f"MISSING: {' '.join(missing)} (hydra/omegaconf: scripts/make_gpu_carry.sh -> .gpu_carry/)")
    sys.exit(3)
PYEOF
ENV_RC=$?
cat "$LOGS/env.txt"
if [ $ENV_RC -ne 0 ]; then
    exit $ENV_RC
fi
HAS_CUDA=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))')

echo "== tests (limit 200 s) =="
timeout 200 "$PY" -m pytest tests/test_device.py tests/test_rollout.py tests/test_expected.py \
    tests/test_lazy_imports.py \
    -q -rs -p no:cacheprovider >"$LOGS/tests.txt" 2>&1
TEST_RC=$?
tail -n 3 "$LOGS/tests.txt"

echo "== benchmark (limit 140 s + 50 s + 40 s + 60 s) =="
if [ "$HAS_CUDA" = 1 ]; then
    timeout 140 "$PY" scripts/bench_train.py --device cuda --n-envs 256,4096,16384 --cycles 2 \
        >"$LOGS/bench.txt" 2>&1
    BENCH_RC=$?
    timeout 50 "$PY" scripts/bench_train.py --device cuda --n-envs 16384 --cycles 1 \
        --precision high >"$LOGS/bench_tf32.txt" 2>&1
    TF32_RC=$?
    # the MacroNet cache in one pass over the train split instead of 256-row chunks
    timeout 40 "$PY" scripts/bench_train.py --device cuda --n-envs 4096 --cycles 1 \
        --override trainer.macro_cache_chunk=0 >"$LOGS/bench_chunk0.txt" 2>&1
    CHUNK0_RC=$?
    # each estimator against the spec's plain loss, cycles interleaved, at the same batch
    timeout 60 "$PY" scripts/bench_estimators.py --device cuda --n-envs 4096 --cycles 2 \
        >"$LOGS/bench_reinforce.txt" 2>&1
    REINFORCE_RC=$?
else
    echo "no CUDA: the benchmark runs on the CPU at a small batch instead" | tee "$LOGS/bench.txt"
    timeout 150 "$PY" scripts/bench_train.py --device cpu --n-envs 32 --cycles 1 \
        --ref-episodes 2 >>"$LOGS/bench.txt" 2>&1
    BENCH_RC=$?
    TF32_RC=0
    CHUNK0_RC=0
    REINFORCE_RC=0
fi

echo
echo "================ gpu_check summary ================"
head -n 2 "$LOGS/env.txt"
echo "tests (rc $TEST_RC): $(tail -n 1 "$LOGS/tests.txt")"
grep -E "^FAILED|^ERROR" "$LOGS/tests.txt" | head -n 10
echo "benchmark (rc $BENCH_RC):"
grep -E "^machine|^\(a\)|^\(b\)|ratio" "$LOGS/bench.txt"
if [ -f "$LOGS/bench_tf32.txt" ]; then
    echo "TF32 (trainer.matmul_precision=high, rc $TF32_RC):"
    grep -E "^\(b\)|ratio" "$LOGS/bench_tf32.txt"
fi
if [ -f "$LOGS/bench_chunk0.txt" ]; then
    echo "MacroNet cache in one pass (trainer.macro_cache_chunk=0, rc $CHUNK0_RC):"
    grep -E "^\(b\)|ratio" "$LOGS/bench_chunk0.txt"
fi
if [ -f "$LOGS/bench_reinforce.txt" ]; then
    echo "each estimator against the plain REINFORCE loss (scripts/bench_estimators.py, rc $REINFORCE_RC):"
    grep -E "^\|" "$LOGS/bench_reinforce.txt"
fi
echo "wall time: $(( $(date +%s) - START )) s; full logs: $LOGS"
if [ $TEST_RC -ne 0 ] || [ $BENCH_RC -ne 0 ] || [ $TF32_RC -ne 0 ] || [ $CHUNK0_RC -ne 0 ] \
    || [ $REINFORCE_RC -ne 0 ]; then
    exit 1
fi
