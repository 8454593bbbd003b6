"""What ``python -m ops.compile_check co4`` compiles: the running top-k's forward and backward kernels as the
wrapper launches them (one warp, 32 channels), for 16-bit and float32 inputs, with and without an initial table,
at k from 4 to the largest the wrapper accepts."""
from ops.co4 import TRITON_MAX_K
from ops.co4 import triton as kernels
from ops.compile_check import CompileCase

POINTERS = {"bf16": "*bf16", "fp32": "*fp32", "fp64": "*fp64"}
TENSORS = ("X", "INIT", "TOP", "DTOP")


def _types(kind: str) -> dict:
    """Inputs and outputs in the input dtype; rank and index int64; gradient buffers in the accumulation dtype."""
    accumulation = "*fp64" if kind == "fp64" else "*fp32"
    return dict({name: POINTERS[kind] for name in TENSORS}, RANK="*i64", INDEX="*i64", DX=accumulation,
                DINIT=accumulation)


def cases():
    # float64 (the tests' dtype) only at the default k: it is the widest state, the flags are the same code; the
    # smallest k in one dtype
    settings = [(k, kind) for k in (12, 32, TRITON_MAX_K) for kind in ("bf16", "fp32")] + [(4, "bf16"), (12, "fp64")]
    for k, kind in settings:
        KP, block_c, warps = kernels.launch_config(k)
        # the plain launch; with both the initial table and the indices; the chunk tables of the parallel form
        variants = [(False, False), (True, False)] + ([(False, True)] if kind == "bf16" else [])
        for extras, last_only in variants:
            flags = dict(K=k, KP=KP, HAS_INIT=extras, LAST_ONLY=last_only, BLOCK_C=block_c)
            label = f"k={k} {kind} initial={extras}" + (" last-only" if last_only else "")
            yield CompileCase(f"forward {label} index={extras}", kernels._topk_fwd_kernel, _types(kind),
                              dict(flags, STORE_INDEX=extras), warps)
            yield CompileCase(f"backward {label}", kernels._topk_bwd_kernel, _types(kind), flags, warps)


# The anchor shape: the speed bench's GPU width (d_model 768: three streams of 768 channels), 2048 tokens, k 12
# (run in time chunks of _time_chunk(2048, 12) = 128 tokens).
ANCHOR = (8, 2048, 3 * 768, 12)


def report_cases():
    """Both kernels as launched at the anchor shape in bf16 without a cache, in the parallel form: the chunk
    tables (last-only), and the passes that write every step (the merge, the chunks from their carried tables,
    which take the initial table); one main-loop iteration is one time step of BLOCK_C channels x k slots."""
    B, T, C, k = ANCHOR
    KP, block_c, warps = kernels.launch_config(k)
    chunk = kernels._time_chunk(T, k)
    shape = f"B{B} T{T} C{C} k{k} chunk{chunk}"
    for label, has_init, last_only in (("chunk tables", False, True), ("chunks from carried tables", True, False)):
        flags = dict(K=k, KP=KP, HAS_INIT=has_init, LAST_ONLY=last_only, BLOCK_C=block_c)
        values = dict(T=chunk, C=C, initial_count=k if has_init else 0)
        yield CompileCase(f"forward, {label}", kernels._topk_fwd_kernel, _types("bf16"),
                          dict(flags, STORE_INDEX=False), warps, shape=shape, values=values, loop_elements=block_c * k)
        yield CompileCase(f"backward, {label}", kernels._topk_bwd_kernel, _types("bf16"), flags, warps, shape=shape,
                          values=values, loop_elements=block_c * k)
