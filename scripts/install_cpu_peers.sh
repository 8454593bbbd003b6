#!/usr/bin/env bash
# Install the peers' Python code without their CUDA builds, for tests/peers on a machine without a GPU:
# mamba-ssm's and causal-conv1d's reference functions and Mamba / Mamba2 modules, fla-core's naive references and
# its Triton kernels (run by Triton's interpreter), flash-linear-attention's layers. No dependencies are pulled,
# so the installed torch stays.
# The versions are the ones scripts/peers.sh builds with CUDA on a GPU machine for the benchmarks (docs/peers.md).
set -euo pipefail
# the build helpers the two source packages import in setup.py (--no-build-isolation builds against our torch)
python -m pip install -q setuptools wheel packaging
# *_FORCE_BUILD: do not look for a prebuilt CUDA wheel; *_SKIP_CUDA_BUILD: do not compile the extensions
MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE \
    python -m pip install -q --no-deps --no-build-isolation mamba-ssm==2.3.2.post1 causal-conv1d==1.7.0
python -m pip install -q --no-deps fla-core==0.6.0
# fla's layers (GLA, DeltaNet, GatedDeltaNet, RWKV-7) for the blocks' state-dict parity tests; pure Python, beside
# fla-core in the same fla package; without transformers, `import fla` skips its layer exports and the tests
# enter fla.layers module by module
python -m pip install -q --no-deps flash-linear-attention==0.6.0
