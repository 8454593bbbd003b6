#!/usr/bin/env bash
# The GPU checks that CPU CI cannot run, in one place, for a session that has the device machine.
#
#   here  (CPU machine, repo root):  bash scripts/gpu_session.sh fetch
#         -> .whl/ (hydra-core, omegaconf, antlr4: missing on the GPU image) and .peers/ (fla, mamba-ssm sources)
#   there (device run, repo root, carry .whl and .peers):
#         bash scripts/gpu_session.sh all      # install, real-size kernel tests, peers, ops benchmark (estimated ~8 min; never run yet)
#         (or the steps one by one: install | test | peers | bench; each later step needs `install` in the same call)
#         bash scripts/gpu_session.sh recall   # the GPU recall frontier, resumable across calls (~20 min in all):
#         each call starts no run after RECALL_MINUTES (default 7) and copies results/recall-gpu to $OUT; copy that
#         back to results/recall-gpu here (it travels with the working tree) and call again until no runs are left
# Results go to $OUT (the device tool's output folder) when it is set, else to gpu_results/.
set -euo pipefail
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
step=${1:-}

fetch() {
  grep -qxF "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
  python3 -m pip download -q --no-deps --only-binary=:all: -d .whl hydra-core==1.3.8 omegaconf==2.3.1
  # antlr4 4.9.3 (what omegaconf 2.3 needs) is published as a source archive only: build its wheel here
  python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
  bash ../shared/device/peers.sh fetch
}

install() {
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD:${PYTHONPATH:-}
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
}

run_tests() {
  # every op and block test, compiled on the GPU (no interpreter), plus the real-size kernel comparisons
  python3 -m pytest -q -x tests/ops tests/blocks 2>&1 | tee "$OUT/pytest-gpu.log"
}

peers() {
  eval "$(bash .peers/peers.sh install | tail -n 1)"
}

bench() {
  PYTHONUNBUFFERED=1 python3 -m zoo.bench ops --preset gpu --out "$OUT" 2>&1 | tee "$OUT/bench-ops.log"
  PYTHONUNBUFFERED=1 python3 -m zoo.bench speed --preset generation --mixers based_linear_attention,mamba --out "$OUT/generation" 2>&1 | tee "$OUT/bench-generation.log"
}

recall_sweep() {
  PYTHONUNBUFFERED=1 python3 -m zoo.bench recall --preset gpu --out results/recall-gpu \
    --stop-after "${RECALL_MINUTES:-7}" 2>&1 | tee "$OUT/bench-recall.log"
  cp -r results/recall-gpu "$OUT/"
}

case "$step" in
  fetch) fetch ;;
  install) install ;;
  test) install; run_tests ;;
  peers) install; peers ;;
  bench) install; peers; bench ;;
  all) install; run_tests; peers; run_tests; bench ;;
  recall) install; recall_sweep ;;
  *) echo "usage: scripts/gpu_session.sh fetch|install|test|peers|bench|all|recall" >&2; exit 2 ;;
esac
