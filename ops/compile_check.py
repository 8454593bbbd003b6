"""Compile every Triton kernel of the ops for a GPU target without a GPU; optionally report registers and spills.

    TRITON_INTERPRET=0 python -m ops.compile_check [selective_scan linear_recurrence based] [--arch 90] [--report]

Triton's CPU interpreter runs kernels as NumPy and does not type-check them the way the GPU compiler does (a
@triton.jit helper must return one type on every path, tl.dot needs 16-row tiles, ...), so CPU-only work and CI
use this to catch what only a GPU build would. Each op lists what to compile in ``ops/<op>/compile_cases.py``:
the launch shapes its wrappers use (every autotune candidate), with the flags switched on.
"""
import argparse
import importlib
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

OPS = ("selective_scan", "linear_recurrence", "based")


@dataclass(frozen=True)
class CompileCase:
    label: str
    kernel: object      # a @triton.jit function, or an autotuned one (its .fn is compiled)
    types: dict         # pointer and float arguments -> Triton type ("*bf16", "fp32"); any other argument is i32
    constants: dict     # constexpr arguments -> value
    num_warps: int
    num_stages: int = 3


def compile_case(case: CompileCase, arch: int):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    fn = case.kernel
    while not isinstance(fn, JITFunction):  # an autotuned (or heuristics-wrapped) kernel wraps its JITFunction
        fn = fn.fn
    names = fn.arg_names
    signature = {n: "constexpr" if n in case.constants else case.types.get(n, "i32") for n in names}
    constexprs = {(names.index(n),): value for n, value in case.constants.items()}
    return triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", arch, 32),
                          options={"num_warps": case.num_warps, "num_stages": case.num_stages})


def ptxas_report(compiled, arch: int) -> str:
    """Registers and spills from ptxas -v (the PTX is assembled again; the compile above already succeeded)."""
    import triton
    folder = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    ptx = compiled.asm["ptx"]
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
            return "; ".join(line.split(":", 1)[-1].strip() for line in result.stderr.splitlines()
                             if "registers" in line or "spill" in line)
    version = re.search(r"\.version (\d+\.\d+)", ptx).group(1)
    return f"(no ptxas here accepts PTX {version})"


def cases(op: str):
    if op not in OPS:
        raise ValueError(f"compile_check: unknown op {op!r}; choose from {', '.join(OPS)}")
    return importlib.import_module(f"ops.{op}.compile_cases").cases()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ops", nargs="*", default=list(OPS), help=f"any of {', '.join(OPS)} (default: all)")
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability as one number (90: H100)")
    parser.add_argument("--report", action="store_true", help="print ptxas's registers and spills per kernel")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise SystemExit("compile_check: run with TRITON_INTERPRET=0; the interpreter does not compile kernels")
    count = 0
    for op in args.ops:
        for case in cases(op):
            try:
                compiled = compile_case(case, args.arch)
            except Exception as error:  # name the failing case, then let the compiler's message follow
                print(f"FAILED {op}: {case.label}", file=sys.stderr)
                raise error
            count += 1
            if args.report:
                print(f"{op}: {case.label}: {ptxas_report(compiled, args.arch)}")
    print(f"compiled {count} kernels for sm_{args.arch}")


if __name__ == "__main__":
    main()
