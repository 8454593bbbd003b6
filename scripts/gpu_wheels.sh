#!/usr/bin/env bash
# The wheels the GPU proof needs that the device machine's image lacks, into one folder to carry (docs/gpu.md).
#
#   bash scripts/gpu_wheels.sh [FOLDER]      (repo root, a machine with internet; FOLDER defaults to .whl)
#
# The image has torch 2.11, triton 3.6, lightning, einops, transformers, pytest (/work/.library/device KINDS.md's
# package list) but not fla-core (the peers' kernels: hgrn, based, and the new mixers' chunk kernels) nor
# hydra-core, omegaconf and antlr4 (only the later recall phase imports them; small, so always carried). All are
# pure Python: downloaded for the image's Python 3.12 without their dependencies (the image has those). mamba-ssm
# is not here: its kernels need a build (scripts/peers.sh, the later 'peers' phase). Exits non-zero when the
# folder is over the device tool's 64 MiB limit (with the working tree, which travels too).
set -euo pipefail
DIR=${1:-.whl}
LIMIT_MIB=64
PY=(--python-version 3.12 --implementation cp --only-binary=:all: --no-deps)
mkdir -p "$DIR"
grep -qxF "/$DIR/" .git/info/exclude 2>/dev/null || echo "/$DIR/" >> .git/info/exclude 2>/dev/null || true
python3 -m pip download -q "${PY[@]}" -d "$DIR" fla-core==0.6.0 hydra-core==1.3.8 omegaconf==2.3.1
# antlr4 4.9.3 (the one omegaconf 2.3 accepts) is published as a source archive only: build its pure-Python wheel
ls "$DIR"/antlr4_python3_runtime-4.9.3-*.whl > /dev/null 2>&1 || python3 -m pip wheel -q --no-deps -w "$DIR" antlr4-python3-runtime==4.9.3
ls -l "$DIR"
kib=$(du -sk "$DIR" | cut -f1)
tree_kib=$(git ls-files -z | du -ck --files0-from=- 2>/dev/null | tail -1 | cut -f1)
echo "wheels: $((kib / 1024)) MiB ($kib KiB) in $DIR; tracked working tree: $((tree_kib / 1024)) MiB; limit $LIMIT_MIB MiB together"
if (( kib + tree_kib > LIMIT_MIB * 1024 )); then
  echo "gpu_wheels.sh: $DIR plus the working tree is over the device tool's $LIMIT_MIB MiB: carry less" >&2
  exit 1
fi
