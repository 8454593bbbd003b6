#!/usr/bin/env bash
# The peers (fla, mamba-ssm) on a GPU machine, for the side-by-side benchmarks and parity tests (docs/peers.md).
#
#   here  (a machine with internet, repo root):  bash scripts/peers.sh fetch    -> .peers/ (sources and wheels)
#                                                bash scripts/peers.sh wheels   -> .whl/ (omegaconf, hydra-core,
#                                                   antlr4: what `zoo.bench gpu --phase recall` needs where the GPU
#                                                   image lacks them)
#   there (the GPU machine, repo root, with .peers/ carried):  bash scripts/peers.sh install
#         -> fla + mamba-ssm (CUDA selective scan, built for sm_90 only) importable from /tmp/peers-site;
#            160 s on one H100 (measured); `python -m zoo.bench gpu --phase peers|ops` calls it.
# A failed build prints the last lines of its log and exits non-zero.
set -euo pipefail
cmd=${1:-}
D=.peers
SITE=/tmp/peers-site
exclude() { grep -qxF "/$1/" .git/info/exclude 2>/dev/null || echo "/$1/" >> .git/info/exclude; }
case "$cmd" in
fetch)
  mkdir -p "$D"; exclude .peers
  python3 -m pip download -q --no-deps fla-core==0.6.0 flash-linear-attention==0.6.0 -d "$D"
  # the mamba-ssm sdist's setup.py imports torch even to be downloaded: use a python that has torch
  PY=python3
  $PY -c "import torch" 2>/dev/null || { [ -x /tmp/peers-venv/bin/python ] || { python3 -m venv /tmp/peers-venv && /tmp/peers-venv/bin/pip install -q torch; }; PY=/tmp/peers-venv/bin/python; }
  MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE \
    $PY -m pip download -q --no-deps --no-build-isolation --no-binary :all: mamba-ssm==2.3.2.post1 causal-conv1d==1.7.0 -d "$D"
  ls -la "$D" ;;
wheels)
  mkdir -p .whl; exclude .whl
  python3 -m pip download -q --no-deps --only-binary=:all: -d .whl hydra-core==1.3.8 omegaconf==2.3.1
  # antlr4 4.9.3 (what omegaconf 2.3 needs) is published as a source archive only: build its wheel here
  python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
  ls -la .whl ;;
install)
  ls "$D"/fla_core-*.whl "$D"/mamba_ssm-*.tar.gz > /dev/null 2>&1 \
    || { echo "peers.sh install: no peer sources in $D/ (run 'bash scripts/peers.sh fetch' on a machine with internet and carry $D)" >&2; exit 1; }
  mkdir -p "$SITE" /tmp/peers-build
  python3 -m pip install -q --no-index --no-deps --target "$SITE" "$D"/fla_core-*.whl "$D"/flash_linear_attention-*.whl
  repo=$PWD
  cd /tmp/peers-build
  tar xzf "$repo/$D"/mamba_ssm-*.tar.gz
  # build for Hopper only (sm_90): ~3 min with 16 jobs instead of far longer for every architecture
  sed -i 's/+ cc_flag/+ ["-gencode","arch=compute_90,code=sm_90"]/' mamba_ssm-*/setup.py
  (cd mamba_ssm-* && MAX_JOBS=16 MAMBA_FORCE_BUILD=TRUE python3 -m pip wheel -q --no-deps --no-build-isolation -w /tmp/peers-wheels . > /tmp/peers-build/mamba.log 2>&1) \
    || { echo "peers.sh install: the mamba-ssm build failed; last lines of /tmp/peers-build/mamba.log:" >&2; tail -n 30 /tmp/peers-build/mamba.log >&2; exit 1; }
  python3 -m pip install -q --no-deps --target "$SITE" /tmp/peers-wheels/mamba_ssm-*.whl
  # causal-conv1d is not built (7+ minutes even for sm_90 alone): mamba-ssm falls back to nn.Conv1d
  cd "$repo"
  echo "peers installed in $SITE: export PYTHONPATH=$SITE:\$PYTHONPATH" ;;
*) echo "usage: bash scripts/peers.sh fetch|wheels|install" >&2; exit 2 ;;
esac
