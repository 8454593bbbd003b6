"""Shape checks shared by the delta rule ops: one line naming what is wrong."""
import torch


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
