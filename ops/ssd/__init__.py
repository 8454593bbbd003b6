"""SSD (Mamba-2's chunked selective scan): ``ssd(x, dt, A, B, C, chunk_size=64, ...)`` with the semantics of
mamba-ssm's ``mamba_chunk_scan_combined``; see reference.py for the definition.

Backends: "reference" (``reference.ssd_chunked``, any device), "cuda" (mamba-ssm's Triton kernels, imported only
when they run) and "auto" (mamba-ssm on a CUDA device where it is installed; on CPU the reference with its
intra-chunk weights compiled, cpu.py, where that builds and the inputs are not float64; else the reference).
"""
import math

import torch

from ops._backend import resolve_peer_backend
from ops.packing import check_seq_idx
from ops.ssd.reference import NO_LIMIT, ssd_chunked, ssd_step

_INSTALL = "pip install zoo[cuda]"


def _check(x, dt, A, B, C, chunk_size, D, z, dt_bias, dt_limit, initial_states, seq_idx):
    """One line naming the first argument whose shape or value does not fit."""
    if x.dim() != 4:
        raise ValueError(f"ssd: x must be (batch, seqlen, nheads, headdim), got shape {tuple(x.shape)}")
    b, length, h, p = x.shape
    if B.dim() != 4 or B.shape[:2] != (b, length) or C.shape != B.shape:
        raise ValueError(f"ssd: B and C must both be (batch, seqlen, ngroups, dstate) = ({b}, {length}, g, n), "
                         f"got {tuple(B.shape)} and {tuple(C.shape)}")
    g, n = B.shape[2], B.shape[3]
    if h % g:
        raise ValueError(f"ssd: ngroups={g} must divide nheads={h} (heads share the groups' B and C)")
    expected = {"dt": (dt, (b, length, h)), "A": (A, (h,)), "z": (z, (b, length, h, p)), "dt_bias": (dt_bias, (h,)),
                "initial_states": (initial_states, (b, h, p, n))}
    for name, (tensor, shape) in expected.items():
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(f"ssd: {name} must have shape {shape}, got {tuple(tensor.shape)}")
    if D is not None and tuple(D.shape) not in ((h,), (h, p)):
        raise ValueError(f"ssd: D must have shape ({h},) or ({h}, {p}), got {tuple(D.shape)}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"ssd: chunk_size must be a positive integer, got {chunk_size!r}")
    if len(tuple(dt_limit)) != 2 or not 0 <= dt_limit[0] <= dt_limit[1]:
        raise ValueError(f"ssd: dt_limit must be (low, high) with 0 <= low <= high, got {dt_limit!r}")
    if seq_idx is not None:
        check_seq_idx(seq_idx, b, length, "ssd")


def ssd(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, chunk_size: int = 64,
        D: torch.Tensor | None = None, z: torch.Tensor | None = None, dt_bias: torch.Tensor | None = None,
        dt_softplus: bool = False, dt_limit: tuple = (0.0, math.inf), initial_states: torch.Tensor | None = None,
        seq_idx: torch.Tensor | None = None, return_final_states: bool = False, backend: str = "auto"):
    """x (b, l, h, p), dt (b, l, h), A (h,), B and C (b, l, g, n), D (h,) or (h, p), z (b, l, h, p), dt_bias (h,),
    initial_states (b, h, p, n). Returns y (b, l, h, p) in x's dtype, or (y, final_states (b, h, p, n), float32)
    with ``return_final_states``. The result does not depend on ``chunk_size`` (up to rounding).

    seq_idx (b, l) integer, packed sequences (see ops.packing): the state restarts at each document; position 0
    continues ``initial_states``, and the final state is the last document's.
    """
    _check(x, dt, A, B, C, chunk_size, D, z, dt_bias, dt_limit, initial_states, seq_idx)
    chosen = resolve_peer_backend(backend, x.device, "ssd", peer="cuda", package="mamba_ssm", install=_INSTALL)
    args = (x, dt, A, B, C, chunk_size, D, z, dt_bias, dt_softplus, tuple(dt_limit), initial_states, seq_idx,
            return_final_states)
    if chosen == "cuda":
        from ops.ssd.cuda import ssd_mamba_ssm
        return ssd_mamba_ssm(*args)
    if backend == "auto" and x.device.type == "cpu" and torch.promote_types(x.dtype, torch.float32) == torch.float32:
        from ops.ssd import cpu
        if cpu.available():
            return cpu.ssd_cpu(*args)
    return ssd_chunked(*args)


__all__ = ["ssd", "ssd_step", "NO_LIMIT"]
