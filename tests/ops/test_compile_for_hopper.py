"""Every Triton kernel compiles for the H100 (sm_90) on a machine without a GPU.

Triton's interpreter, which runs the kernel tests on CPU, does not compile anything; this runs Triton's real
compiler (and its bundled ptxas) over each op's launch shapes: ``python -m ops.compile_check`` (see there).
"""
import json
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


def test_cta_occupancy_follows_the_h100_limits():
    from ops.compile_check import ctas_per_sm
    assert ctas_per_sm(registers=64, shared=0, warps=4) == 8          # 64 warps per SM
    assert ctas_per_sm(registers=255, shared=0, warps=4) == 2         # 256 registers x 32 lanes per warp
    assert ctas_per_sm(registers=32, shared=120_000, warps=1) == 1    # shared memory binds first
    assert ctas_per_sm(registers=32, shared=0, warps=1) == 32         # at most 32 CTAs per SM


def test_launch_specialisation_matches_triton():
    """Integers of 1 become constants and integers divisible by 16 (and pointers) are marked, as launches do."""
    pytest.importorskip("triton.backends.nvidia", reason="this triton has no NVIDIA backend")
    from ops.compile_check import CompileCase, _specialise
    case = CompileCase("x", None, dict(p="*bf16"), dict(K=4), 4, values=dict(a=1, b=1536, c=7))
    signature, constants, attrs = _specialise(case, ["p", "a", "b", "c", "K"])
    assert signature == dict(p="*bf16", a="constexpr", b="i32", c="i32", K="constexpr")
    assert constants == {(1,): 1, (4,): 4}
    assert set(attrs) == {(0,), (2,)}


def test_main_loop_is_the_longest_backward_branch():
    from ops.compile_check import main_loop
    code = [(0x00, "MOV R1, R2"), (0x10, "FADD R1, R1, R1"), (0x20, "FMUL R1, R1, R1"),
            (0x30, "@P0 BRA (.L_x_1)"), (0x40, "@P1 BRA (.L_x_0)"), (0x50, "EXIT"), (0x60, "BRA (.L_x_2)")]
    labels = {".L_x_0": 0x00, ".L_x_1": 0x20, ".L_x_2": 0x60}
    assert main_loop(code, labels) == [i for _, i in code[:5]]
    inner, outer = main_loop(code, labels, nested=True)
    assert inner == ["FMUL R1, R1, R1", "@P0 BRA (.L_x_1)"] and len(outer) == 5


@pytest.mark.skipif(torch.cuda.is_available(), reason="the report is a CPU-side static read")
def test_report_lists_the_selective_scan_at_the_anchor_shapes(tmp_path):
    pytest.importorskip("triton.backends.nvidia", reason="this triton has no NVIDIA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    out = tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-m", "ops.compile_check", "selective_scan", "--report", "--json",
                           str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0 and "ptxas" in done.stderr and "No such file" in done.stderr:
        pytest.skip("this triton install has no ptxas to finish a CUDA build")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert {(r["kernel"], r["shape"]) for r in rows} == {
        (k, s) for k in ("_scan_fwd_kernel", "_scan_bwd_kernel")
        for s in ("B8 D1536 L2048 N16", "B2 D1536 L8192 N16", "B8 D1536 L2048 N64")}
    for row in rows:
        assert {"kernel", "shape", "registers", "spill_bytes", "shared_bytes", "ctas_per_sm",
                "sass_per_element"} <= set(row)
        assert row["spill_bytes"] == 0, row
        assert row["registers"] > 0 and row["ctas_per_sm"] >= 1 and row["sass_per_element"] > 0, row


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CPU-side static read")
def test_running_topk_kernels_do_not_spill():
    """The running top-k keeps each channel's list in registers: at the largest lists (k = 32 and 64, the initial
    table and indices on; float64 at k = 12) ptxas must find room for it without spilling."""
    pytest.importorskip("triton.backends.nvidia", reason="this triton has no NVIDIA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    script = ("from ops.compile_check import compile_case, ptxas_report\nfrom ops.co4 import compile_cases\n"
              "for case in compile_cases.cases():\n"
              "    if 'initial=True' in case.label and ('k=12 fp64' in case.label or case.constants['K'] >= 32):\n"
              "        print(case.label, '|', ptxas_report(compile_case(case, 90), 90), flush=True)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0 and "ptxas" in done.stderr and "No such file" in done.stderr:
        pytest.skip("this triton install has no ptxas to finish a CUDA build")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = done.stdout.strip().splitlines()
    assert len(rows) == 10 and all("registers" in row for row in rows), done.stdout
    for row in rows:
        assert "0 bytes spill stores" in row and "0 bytes spill loads" in row, row
