"""Argument handling shared by the delta rule ops: shape checks (one line naming what is wrong), the default
scale and the backend choice."""
import torch

from ops._backend import resolve_peer_backend
from ops.packing import check_seq_idx

FLA_INSTALL = "pip install zoo[fla]"


def prepare_call(owner: str, q, k, v, beta, g, initial_state, seq_idx, scale, backend) -> tuple[float, str]:
    """Validate the arguments; return (scale, K^-0.5 by default; the backend that will run)."""
    check_delta_rule_inputs(owner, q, k, v, beta, g, initial_state)
    if seq_idx is not None:
        check_seq_idx(seq_idx, q.shape[0], q.shape[1], owner)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    return scale, resolve_peer_backend(backend, q.device, owner, "fla", "fla", FLA_INSTALL)


def check_delta_rule_inputs(owner: str, q, k, v, beta, g=None, initial_state=None):
    """q, k (B, T, H, K), v (B, T, H, V), beta and g (B, T, H), initial_state (B, H, K, V)."""
    if q.dim() != 4 or k.shape != q.shape or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"{owner}: expected q, k (B, T, H, K) and v (B, T, H, V), got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    for name, x in (("beta", beta), ("g", g)):
        if x is not None and tuple(x.shape) != tuple(q.shape[:3]):
            raise ValueError(f"{owner}: {name} must have shape (B, T, H) = {tuple(q.shape[:3])}, got {tuple(x.shape)}")
    B, _, H, K = q.shape
    expected = (B, H, K, v.shape[-1])
    if initial_state is not None and tuple(initial_state.shape) != expected:
        raise ValueError(f"{owner}: initial_state must have shape (B, H, K, V) = {expected}, "
                         f"got {tuple(initial_state.shape)}")
    for name, x in (("q", q), ("k", k), ("v", v), ("beta", beta), ("g", g)):
        if x is not None and not torch.is_floating_point(x):
            raise ValueError(f"{owner}: {name} must be a floating-point tensor, got {x.dtype}")
