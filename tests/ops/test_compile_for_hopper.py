"""Every Triton kernel compiles for the H100 (sm_90) on a machine without a GPU.

Triton's interpreter, which runs the kernel tests on CPU, does not compile anything; this runs Triton's real
compiler (and its bundled ptxas) over each op's launch shapes: ``python -m ops.compile_check`` (see there).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ops.compile_check import OPS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the kernel tests compile and run every kernel")
@pytest.mark.parametrize("op", OPS)
def test_kernels_compile_for_sm90(op):
    pytest.importorskip("triton.backends.nvidia", reason="this triton has no NVIDIA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    done = subprocess.run([sys.executable, "-m", "ops.compile_check", op, "--arch", "90"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0 and "ptxas" in done.stderr and "No such file" in done.stderr:
        pytest.skip("this triton install has no ptxas to finish a CUDA build")
    assert done.returncode == 0 and "compiled" in done.stdout, done.stderr[-3000:]


def test_unknown_op_is_named():
    from ops.compile_check import cases
    with pytest.raises(ValueError, match="'scan'.*selective_scan, linear_recurrence, based"):
        cases("scan")
