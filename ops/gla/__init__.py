"""Gated linear attention: ``gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False,
seq_idx=None)`` with the semantics and (B, T, H, dim) layout of fla's ``chunk_gla``; see reference.py.

Backends: "reference" (``reference.gla_chunked``, any device), "fla" (fla's Triton ``chunk_gla``, imported only
when it runs) and "auto" (fla on a CUDA device where fla-core is installed; on CPU the compiled DPLR kernel
when it builds, cpu.py; else the reference).
"""
import torch

from ops._backend import resolve_peer_backend
from ops.gla import cpu
from ops.gla.reference import DEFAULT_CHUNK_SIZE, gla_chunked, gla_step
from ops.packing import check_seq_idx

_INSTALL = "pip install zoo[fla]"


def _check(q, k, v, g, initial_state, seq_idx, chunk_size):
    if q.dim() != 4 or k.shape != q.shape or g.shape != q.shape or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"gla: expected q, k, g (B, T, H, K) and v (B, T, H, V), got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}, g {tuple(g.shape)}")
    B, T, H, K = q.shape
    state_shape = (B, H, K, v.shape[-1])
    if initial_state is not None and tuple(initial_state.shape) != state_shape:
        raise ValueError(f"gla: initial_state must have shape (B, H, K, V) = {state_shape}, "
                         f"got {tuple(initial_state.shape)}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"gla: chunk_size must be a positive integer, got {chunk_size!r}")
    if seq_idx is not None:
        check_seq_idx(seq_idx, B, T, "gla")


def gla(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, scale: float | None = None,
        initial_state: torch.Tensor | None = None, output_final_state: bool = False,
        seq_idx: torch.Tensor | None = None, backend: str = "auto", chunk_size: int = DEFAULT_CHUNK_SIZE):
    """q, k, g (B, T, H, K) with g <= 0 the log decay of each key channel; v (B, T, H, V); state (B, H, K, V).
    Returns (o (B, T, H, V) in q's dtype, final state (float32) or None). ``chunk_size``: the reference's chunk
    (the result does not depend on it; fla and the CPU kernel pick their own).

    seq_idx (B, T) integer, packed sequences (see ops.packing): the state restarts at each document; position 0
    continues ``initial_state``, and the final state is the last document's.
    """
    _check(q, k, v, g, initial_state, seq_idx, chunk_size)
    chosen = resolve_peer_backend(backend, q.device, "gla", peer="fla", package="fla", install=_INSTALL)
    if chosen == "fla":
        from ops.gla.fla import gla_fla
        return gla_fla(q, k, v, g, scale, initial_state, output_final_state, seq_idx)
    if cpu.runs(backend, q):
        return cpu.gla_cpu(q, k, v, g, scale, initial_state, output_final_state, seq_idx)
    return gla_chunked(q, k, v, g, scale, initial_state, output_final_state, seq_idx, chunk_size)


__all__ = ["gla", "gla_step"]
