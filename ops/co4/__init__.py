"""Co4's causal running top-k: ``running_topk(values, k, initial=None, initial_count=0, return_indices=False,
backend="auto")``.

Per channel of values (batch, T, C) and per step t: the k largest entries seen so far (an optional initial table,
then the tokens s <= t), ranked by the value rounded to bfloat16, ties to the earlier entry. Returns
(top, rank, index): top (batch, T, k, C) in values' dtype, row r the r-th largest, 0 in rows the prefix cannot
fill yet, differentiable (each row's gradient goes to its source); rank (batch, T, C) int64, where token t stands
in its own prefix (k when outside the top k); index (batch, T, k, C) int64 into ``cat([initial, values], 1)``
(-1 for an unfilled row) when ``return_indices``, else None. ``initial`` (batch, k, C), same dtype, sorted that
way, holds ``initial_count`` filled slots first (a decoding cache; the rest is ignored). See reference.py.

``backend="auto"``: the Triton kernel on a GPU (k <= 64), the compiled C kernel on CPU (ops/co4/cpu.py, built at
first use; the reference where no C compiler is found), else the reference.
"""
import torch

from ops._backend import resolve_backend

__all__ = ["running_topk"]

# the list of one channel lives in one thread's registers (4 numbers per slot): larger k would spill
TRITON_MAX_K = 64
TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def _check(values, k, initial, initial_count):
    if values.dim() != 3 or values.shape[1] == 0:
        raise ValueError(f"running_topk: values must be (batch, T >= 1, C), got shape {tuple(values.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"running_topk: k must be a positive integer, got {k!r}")
    if isinstance(initial_count, bool) or not isinstance(initial_count, int) or not 0 <= initial_count <= k:
        raise ValueError(f"running_topk: initial_count must be an integer in [0, k={k}], got {initial_count!r}")
    if initial is None:
        if initial_count:
            raise ValueError(f"running_topk: initial_count={initial_count} needs an initial table; got none")
        return
    B, _, C = values.shape
    if tuple(initial.shape) != (B, k, C) or initial.dtype != values.dtype:
        raise ValueError(f"running_topk: initial must be (batch, k, C) = {(B, k, C)} in {values.dtype}, got "
                         f"{tuple(initial.shape)} in {initial.dtype}")


def cpu_kernel_runs(backend: str, values: torch.Tensor) -> bool:
    """backend="auto" on CPU takes the compiled C kernel when it builds here."""
    if backend != "auto" or values.device.type != "cpu":
        return False
    from ops.co4 import cpu
    return cpu.available()


def cpu_mix_runs(backend: str, values: torch.Tensor) -> bool:
    """backend="auto" on CPU runs Co4's top-k and small attention as one compiled kernel (ops/co4/cpu_mix.py)
    when it builds here."""
    if backend != "auto" or values.device.type != "cpu":
        return False
    from ops.co4 import cpu_mix
    return cpu_mix.available()


def running_topk(values: torch.Tensor, k: int, initial: torch.Tensor | None = None, initial_count: int = 0,
                 return_indices: bool = False, backend: str = "auto"):
    """The causal per-channel running top-k of values (batch, T, C); returns (top, rank, index or None)."""
    _check(values, k, initial, initial_count)
    chosen = resolve_backend(backend, values.device, "running_topk")
    fits = k <= TRITON_MAX_K and values.dtype in TRITON_DTYPES
    if chosen == "triton" and not fits:
        if backend == "triton":
            raise ValueError(f"running_topk: backend='triton' supports k <= {TRITON_MAX_K} and dtypes "
                             f"float32, bfloat16, float16, float64; got k={k}, {values.dtype}")
        chosen = "reference"
    if chosen == "triton":
        from ops.co4.triton import running_topk_triton
        return running_topk_triton(values, k, initial, initial_count, return_indices)
    if cpu_kernel_runs(backend, values):
        from ops.co4.cpu import running_topk_cpu
        return running_topk_cpu(values, k, initial, initial_count, return_indices)
    from ops.co4.reference import running_topk_reference
    top, rank, index = running_topk_reference(values, k, initial, initial_count)
    return top, rank, (index if return_indices else None)
