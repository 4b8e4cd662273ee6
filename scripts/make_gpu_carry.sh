#!/usr/bin/env bash
# Copy the pure-Python packages an offline GPU machine lacks (hydra-core, omegaconf,
# antlr4-python3-runtime, PyYAML's Python part) from a working environment into .gpu_carry/,
# which scripts/gpu_check.sh puts on PYTHONPATH. Pure Python: a copy from Python 3.11 runs on
# 3.12. Compiled parts (PyYAML's optional C loader) and bytecode caches are left out.
#
# Usage: scripts/make_gpu_carry.sh [PYTHON] [DEST]    (defaults: .venv/bin/python, .gpu_carry)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
DEST=${2:-.gpu_carry}
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
TMP="$DEST.partial"
rm -rf "$TMP"
mkdir -p "$TMP"
for pkg in hydra omegaconf antlr4 yaml; do
    if [ ! -d "$SITE/$pkg" ]; then
        echo "error: package '$pkg' not found in $SITE (install the project there first: make install)" >&2
        exit 1
    fi
    cp -R "$SITE/$pkg" "$TMP/"
done
shopt -s nullglob nocaseglob
for info in "$SITE"/hydra_core-*.dist-info "$SITE"/omegaconf-*.dist-info \
    "$SITE"/antlr4_python3_runtime-*.dist-info "$SITE"/pyyaml-*.dist-info; do
    cp -R "$info" "$TMP/"
done
find "$TMP" \( -name __pycache__ -o -name '*.so' \) -prune -exec rm -rf {} +
rm -rf "$DEST"
mv "$TMP" "$DEST"  # the folder appears complete or not at all
echo "carried into $DEST ($(du -sh "$DEST" | cut -f1)): $(ls "$DEST" | tr '\n' ' ')"
