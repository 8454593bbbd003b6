"""Compile every Triton kernel of the ops for a GPU target without a GPU; report what the compiled code costs.

    TRITON_INTERPRET=0 python -m ops.compile_check [selective_scan linear_recurrence based co4] [--arch 90]
    TRITON_INTERPRET=0 python -m ops.compile_check --report [--json FILE] [--markdown FILE]

Triton's CPU interpreter runs kernels as NumPy and does not type-check them the way the GPU compiler does (a
@triton.jit helper must return one type on every path, tl.dot needs 16-row tiles, ...), so CPU-only work and CI
use this to catch what only a GPU build would.

The protocol of an op's ``ops/<op>/compile_cases.py``:

- ``cases()`` yields the ``CompileCase``s the plain check compiles: the launch shapes its wrappers use (every
  autotune candidate), with the flags switched on.
- ``report_cases()`` (optional; without it ``--report`` reads ``cases()``) yields each kernel exactly as it is
  launched at the anchor shapes: ``shape`` names the problem ("B8 D1536 L2048 N16"), ``values`` holds the integer
  arguments of that launch (Triton specialises them as a launch does: an integer equal to 1 becomes a constant,
  one divisible by 16 is marked so; pointers are marked 16-byte aligned, as fresh torch allocations are), the
  constants and warps are those the wrapper (or the autotuner's pick for that shape) would use, and
  ``loop_elements`` is how many elements one iteration of the kernel's main loop processes in one program (for
  the selective scan: (d, l, n) triples). A kernel whose main loop holds a hot inner loop (the selective scan's
  loop over states inside its loop over chunks) sets ``inner_trips`` to that loop's trip count and
  ``loop_elements`` to the elements of one outer iteration.

The report (a static read of the compiled code, not a measurement) gives per case: registers and spill bytes
(ptxas -v), shared memory (Triton's allocation), CTAs per SM (the H100 limits below: registers, shared memory,
warps, blocks), and SASS instructions per element: the cubin is disassembled with the nvdisasm Triton ships, the
main loop is the longest backward branch's span (inner loops inside it counted once), and its instruction count
is divided by the elements one thread processes per iteration (``loop_elements / (32 * num_warps)``). With
``inner_trips`` the instructions executed per outer iteration are inner * inner_trips + the rest of the outer
body, and loop_sass, loop_barriers and loop_shuffles describe the inner loop.
"""
import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

OPS = ("selective_scan", "linear_recurrence", "based", "co4")

# H100 (sm_90) per-SM limits used for CTAs per SM
SM90 = dict(registers=65536, register_unit=256, max_warps=64, max_ctas=32, shared=233472, shared_per_cta_reserved=1024,
            shared_unit=128)


@dataclass(frozen=True)
class CompileCase:
    label: str
    kernel: object      # a @triton.jit function, or an autotuned one (its .fn is compiled)
    types: dict         # pointer and float arguments -> Triton type ("*bf16", "fp32"); any other argument is i32
    constants: dict     # constexpr arguments -> value
    num_warps: int
    num_stages: int = 3
    shape: str = ""     # the anchor shape this launch belongs to (report cases)
    values: dict = field(default_factory=dict)  # integer arguments of the launch -> value, specialised as launched
    loop_elements: int = 0  # elements one main-loop iteration processes per program (0: not reported)
    inner_trips: int = 0    # the main loop holds a hot inner loop that runs this many times per iteration


def _specialise(case: CompileCase, names):
    """Signature, constants and attributes as a launch with ``case.values`` would give them."""
    from triton.backends.compiler import BaseBackend
    aligned = BaseBackend.parse_attr("D")  # Triton's own encoding of "divisible by 16"
    constants = dict(case.constants)
    signature, attrs = {}, {}
    for index, name in enumerate(names):
        value = case.values.get(name)
        if name in constants:
            signature[name] = "constexpr"
        elif isinstance(value, int) and value == 1:
            signature[name] = "constexpr"
            constants[name] = 1
        else:
            signature[name] = case.types.get(name, "i32")
            pointer = signature[name].startswith("*")
            if case.values and (pointer or (isinstance(value, int) and value % 16 == 0)):
                attrs[(index,)] = aligned
    return signature, {(names.index(n),): v for n, v in constants.items()}, attrs


def compile_case(case: CompileCase, arch: int):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    fn = case.kernel
    while not isinstance(fn, JITFunction):  # an autotuned (or heuristics-wrapped) kernel wraps its JITFunction
        fn = fn.fn
    signature, constexprs, attrs = _specialise(case, fn.arg_names)
    return triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", arch, 32),
                          options={"num_warps": case.num_warps, "num_stages": case.num_stages})


def _nvidia_tool(name: str) -> str:
    import triton
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def ptxas_report(compiled, arch: int) -> str:
    """Registers and spills from ptxas -v (the PTX is assembled again; the compile above already succeeded)."""
    ptx = compiled.asm["ptx"]
    for tool in ("ptxas-blackwell", "ptxas"):
        path = _nvidia_tool(tool)
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


def sass(compiled) -> list:
    """The kernel's SASS as (address, instruction text) pairs, with labels resolved to addresses."""
    with tempfile.NamedTemporaryFile("wb", suffix=".cubin", delete=False) as handle:
        handle.write(compiled.asm["cubin"])
    result = subprocess.run([_nvidia_tool("nvdisasm"), "-c", handle.name], capture_output=True, text=True)
    os.unlink(handle.name)
    if result.returncode != 0:
        raise RuntimeError(f"nvdisasm failed: {result.stderr.strip()}")
    instructions, labels, pending = [], {}, []
    for line in result.stdout.splitlines():
        label = re.match(r"\s*(\.L_x_\d+):", line)
        if label:
            pending.append(label.group(1))
            continue
        op = re.match(r"\s*/\*([0-9a-f]+)\*/\s+(.*?)\s*;", line)
        if op:
            address = int(op.group(1), 16)
            labels.update((name, address) for name in pending)
            pending = []
            instructions.append((address, op.group(2).replace("`", "")))
    return instructions, labels


def loops(instructions, labels) -> list:
    """(start, end) addresses of every loop: the span of each backward branch."""
    spans = []
    for address, text in instructions:
        target = re.search(r"BRA\s.*\((\.L_x_\d+)\)", text)
        if target and labels.get(target.group(1), address + 1) < address:
            spans.append((labels[target.group(1)], address))
    return spans


def main_loop(instructions, labels, nested: bool = False):
    """The main loop's instructions: the longest loop, and with ``nested`` the longest loop inside it as well
    (inner, outer). Without ``nested`` an inner loop's instructions count once."""
    spans = loops(instructions, labels)
    body = lambda span: [i for a, i in instructions if span[0] <= a <= span[1]]
    if not spans:
        return ([], []) if nested else []
    outer = max(spans, key=lambda s: len(body(s)))
    if not nested:
        return body(outer)
    inner = [s for s in spans if s != outer and outer[0] <= s[0] and s[1] <= outer[1]]
    return (body(max(inner, key=lambda s: len(body(s)))) if inner else body(outer)), body(outer)


def ctas_per_sm(registers: int, shared: int, warps: int) -> int:
    per_warp = -(-registers * 32 // SM90["register_unit"]) * SM90["register_unit"]
    by_registers = (SM90["registers"] // per_warp) // warps if registers else SM90["max_ctas"]
    unit = SM90["shared_unit"]
    shared_cta = -(-(shared + SM90["shared_per_cta_reserved"]) // unit) * unit
    by_shared = SM90["shared"] // shared_cta
    return min(by_registers, by_shared, SM90["max_warps"] // warps, SM90["max_ctas"])


def _opcode(instruction: str) -> str:
    words = instruction.split()
    return words[1] if words[0].startswith("@") else words[0]  # skip a predicate guard


def cost_row(op: str, case: CompileCase, compiled, arch: int) -> dict:
    usage = ptxas_report(compiled, arch)
    registers = int(re.search(r"Used (\d+) registers", usage).group(1)) if "Used" in usage else None
    spills = sum(int(x) for x in re.findall(r"(\d+) bytes spill (?:stores|loads)", usage))
    shared = int(compiled.metadata.shared)
    row = dict(op=op, kernel=_kernel_name(case),
               label=case.label, shape=case.shape or "-", warps=case.num_warps, registers=registers,
               spill_bytes=spills, shared_bytes=shared,
               ctas_per_sm=ctas_per_sm(registers, shared, case.num_warps) if registers else None,
               loop_sass=None, loop_barriers=None, loop_shuffles=None, sass_per_element=None)
    if case.loop_elements:
        per_thread = case.loop_elements / (32 * case.num_warps)
        if case.inner_trips:  # the inner loop runs inner_trips times, the rest of the outer body once
            inner, outer = main_loop(*sass(compiled), nested=True)
            body = inner
            executed = len(inner) * case.inner_trips + len(outer) - len(inner)
        else:
            body = main_loop(*sass(compiled))
            executed = len(body)
        opcodes = [_opcode(i) for i in body]
        row.update(loop_sass=len(body), loop_barriers=sum(o.startswith("BAR") for o in opcodes),
                   loop_shuffles=sum(o.startswith("SHFL") for o in opcodes),
                   sass_per_element=round(executed / per_thread, 1))
    return row


COLUMNS = ("kernel", "shape", "label", "warps", "registers", "spill_bytes", "shared_bytes", "ctas_per_sm",
           "loop_sass", "loop_barriers", "loop_shuffles", "sass_per_element")


def markdown(rows, command: str) -> str:
    import triton
    lines = [f"`{command}`", "",
             f"A static read of the code Triton {triton.__version__} compiles for sm_90 (H100), not a measurement: "
             "no kernel ran. sass_per_element = instructions in the main loop / elements one thread handles per "
             "iteration; ctas_per_sm from registers, shared memory and warps against the H100's limits.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join("-" if row[c] is None else str(row[c]) for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def _kernel_name(case: CompileCase) -> str:
    fn = case.kernel
    while not hasattr(fn, "__name__") and hasattr(fn, "fn"):
        fn = fn.fn
    return getattr(fn, "__name__", str(fn))


def cases(op: str, report: bool = False):
    if op not in OPS:
        raise ValueError(f"compile_check: unknown op {op!r}; choose from {', '.join(OPS)}")
    module = importlib.import_module(f"ops.{op}.compile_cases")
    return module.report_cases() if report and hasattr(module, "report_cases") else module.cases()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ops", nargs="*", default=list(OPS), help=f"any of {', '.join(OPS)} (default: all)")
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability as one number (90: H100)")
    parser.add_argument("--report", action="store_true",
                        help="compile the launches at the anchor shapes and print their static costs")
    parser.add_argument("--json", metavar="FILE", help="with --report: also write the rows as JSON")
    parser.add_argument("--markdown", metavar="FILE", help="with --report: also write the table as Markdown")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise SystemExit("compile_check: run with TRITON_INTERPRET=0; the interpreter does not compile kernels")
    if (args.json or args.markdown) and not args.report:
        raise SystemExit("compile_check: --json and --markdown need --report")
    count, rows = 0, []
    for op in args.ops:
        for case in cases(op, report=args.report):
            try:
                compiled = compile_case(case, args.arch)
            except Exception as error:  # name the failing case, then let the compiler's message follow
                print(f"FAILED {op}: {case.label}", file=sys.stderr)
                raise error
            count += 1
            if args.report:
                row = cost_row(op, case, compiled, args.arch)
                rows.append(row)
                print("  ".join(f"{c}={row[c]}" for c in COLUMNS), flush=True)
    print(f"compiled {count} kernels for sm_{args.arch}")
    if args.report:
        command = "TRITON_INTERPRET=0 python -m ops.compile_check " + " ".join(argv if argv is not None
                                                                              else sys.argv[1:])
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(rows, handle, indent=1)
        if args.markdown:
            with open(args.markdown, "w") as handle:
                handle.write(markdown(rows, command.strip()))
        print(markdown(rows, command.strip()))


if __name__ == "__main__":
    main()
