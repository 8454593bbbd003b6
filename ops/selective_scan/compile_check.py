"""Compile the selective-scan kernels for a GPU target without a GPU, and report registers and spills.

    TRITON_INTERPRET=0 python -m ops.selective_scan.compile_check [--arch 90] [--n-state 16 64]

The interpreter runs kernels as NumPy and does not type-check them the way the GPU compiler does (for example,
a @triton.jit helper must return one type on every path), so CPU-only work uses this to catch compile errors.
"""
import argparse
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from ops.selective_scan import triton as kernels

FLAGS = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, HAS_H0=True)
FWD_POINTERS = dict(u_ptr="*bf16", delta_ptr="*bf16", A_ptr="*fp32", B_ptr="*bf16", C_ptr="*bf16", D_ptr="*fp32",
                    z_ptr="*bf16", bias_ptr="*fp32", h0_ptr="*fp32", out_ptr="*bf16", last_ptr="*fp32",
                    ckpt_ptr="*fp32")
BWD_POINTERS = dict(FWD_POINTERS, g_out_ptr="*bf16", g_last_ptr="*fp32", g_u_ptr="*bf16", g_delta_ptr="*bf16",
                    g_z_ptr="*bf16", g_A_ptr="*fp32", g_B_ptr="*fp32", g_C_ptr="*fp32", g_D_ptr="*fp32",
                    g_bias_ptr="*fp32", g_h0_ptr="*fp32", scratch_ptr="*fp32")


def compile_kernel(kernel, pointers: dict, constants: dict, num_warps: int, arch: int):
    names = kernel.arg_names
    signature, constexprs = {}, {}
    for name in names:
        if name in constants:
            signature[name] = "constexpr"
            constexprs[(names.index(name),)] = constants[name]
        else:
            signature[name] = pointers.get(name, "i32")
    return triton.compile(ASTSource(kernel, signature, constexprs), target=GPUTarget("cuda", arch, 32),
                          options={"num_warps": num_warps})


def ptxas_report(compiled, arch: int) -> str:
    """Registers and spills from ptxas -v (the PTX is assembled again; the compile above already succeeded)."""
    folder = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    ptx = compiled.asm["ptx"]
    version = re.search(r"\.version (\d+\.\d+)", ptx).group(1)
    for tool in ("ptxas-blackwell", "ptxas"):
        path = os.path.join(folder, tool)
        if not os.path.exists(path):
            continue
        with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as handle:
            handle.write(ptx)
        result = subprocess.run([path, f"--gpu-name=sm_{arch}a", "-v", handle.name, "-o", os.devnull],
                                capture_output=True, text=True)
        os.unlink(handle.name)
        if result.returncode == 0:
            lines = [line.split(":", 1)[-1].strip() for line in result.stderr.splitlines()
                     if "registers" in line or "spill" in line]
            return "; ".join(lines)
    return f"(no ptxas here accepts PTX {version})"


def build_all(n_states=(16, 64), arch: int = 90, report: bool = False, ckpt_every: int | None = None):
    ckpt_every = ckpt_every or kernels.CKPT_EVERY
    for n_state in n_states:
        for grouped in (False, True):
            block_d, block_l, block_n = kernels._blocks(n_state, kernels.FWD_TILE_BUDGET)
            tiles = dict(BLOCK_D=block_d, BLOCK_L=block_l, BLOCK_N=block_n)
            fwd = compile_kernel(kernels._scan_fwd_kernel, FWD_POINTERS,
                                 dict(FLAGS, SAVE_CKPT=True, CKPT_EVERY=ckpt_every, GROUPED=grouped, **tiles),
                                 kernels.FWD_WARPS, arch)
            block_d, _, _ = kernels._blocks(n_state, kernels.BWD_TILE_BUDGET)
            tiles["BLOCK_D"] = block_d
            bwd = compile_kernel(kernels._scan_bwd_kernel, BWD_POINTERS,
                                 dict(FLAGS, HAS_G_LAST=True, CKPT_EVERY=ckpt_every, GROUPED=grouped, **tiles),
                                 kernels.BWD_WARPS, arch)
            if report:
                for label, compiled in (("fwd", fwd), ("bwd", bwd)):
                    print(f"{label} N={n_state} grouped={grouped} ckpt_every={ckpt_every}: "
                          f"{ptxas_report(compiled, arch)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--n-state", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--ckpt-every", type=int, default=None, help="default: the kernel module's CKPT_EVERY")
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise SystemExit("run with TRITON_INTERPRET=0: the interpreter does not compile kernels")
    build_all(args.n_state, args.arch, report=True, ckpt_every=args.ckpt_every)


if __name__ == "__main__":
    main()
