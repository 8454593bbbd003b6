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
