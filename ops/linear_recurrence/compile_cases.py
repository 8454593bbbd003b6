"""What ``python -m ops.compile_check linear_recurrence`` compiles: forward (fp32) and backward (bf16), linear and
log form, with initial and final states, at every autotune candidate."""
from ops.compile_check import CompileCase
from ops.linear_recurrence import triton as kernels

FWD_TYPES = dict(X="*fp32", G="*fp32", H0="*fp32", H="*fp32", HT="*fp32")
BWD_TYPES = dict(X="*bf16", G="*bf16", H="*bf16", H0="*bf16", DH="*bf16", DHT="*fp32", DX="*bf16", DG="*bf16",
                 DH0="*bf16")


def cases():
    for config in kernels._configs():
        tiles, warps = config.kwargs, config.num_warps
        for log_values in (False, True):
            label = f"log_values={log_values} {tiles} warps={warps}"
            flags = dict(LOG_VALUES=log_values, HAS_H0=True, **tiles)
            yield CompileCase(f"forward {label}", kernels._forward_kernel, FWD_TYPES,
                              dict(flags, STORE_FINAL=True), warps)
            yield CompileCase(f"backward {label}", kernels._backward_kernel, BWD_TYPES,
                              dict(flags, HAS_DHT=True), warps)


# The anchor shape of the report (the minGRU scan of docs/peers.md): batch, T, D; bf16 as minGRU/minLSTM train.
ANCHOR = (8, 2048, 1536)
LAUNCH_TYPES = dict(X="*bf16", G="*bf16", H0="*fp32", H="*bf16", HT="*fp32", DH="*bf16", DHT="*fp32", DX="*bf16",
                    DG="*bf16", DH0="*fp32")


def report_cases():
    """Both kernels, both forms, as a training step launches them at the anchor shape: bf16 tensors, no initial
    or final state. The autotuner picks a candidate by timing on the GPU, so every candidate is reported; one
    main-loop iteration processes a BLOCK_T x BLOCK_D tile per program."""
    batch, length, width = ANCHOR
    shape = f"B{batch} T{length} D{width}"
    values = dict(T=length, D=width, T_BUCKET=kernels._length_bucket(length))
    for config in kernels._configs():
        tiles, warps = config.kwargs, config.num_warps
        elements = tiles["BLOCK_T"] * tiles["BLOCK_D"]
        for log_values in (False, True):
            label = f"{'log' if log_values else 'linear'} {tiles['BLOCK_T']}x{tiles['BLOCK_D']} warps={warps}"
            flags = dict(LOG_VALUES=log_values, HAS_H0=False, **tiles)
            yield CompileCase(f"forward {label}", kernels._forward_kernel, LAUNCH_TYPES, dict(flags, STORE_FINAL=False),
                              warps, config.num_stages, shape=shape, values=values, loop_elements=elements)
            yield CompileCase(f"backward {label}", kernels._backward_kernel, LAUNCH_TYPES, dict(flags, HAS_DHT=False),
                              warps, config.num_stages, shape=shape, values=values, loop_elements=elements)
