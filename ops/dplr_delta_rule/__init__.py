"""The generalized delta rule with a diagonal-plus-low-rank transition (the recurrence RWKV-7 runs):
``dplr_delta_rule(q, k, v, a, b, gk, scale=None, initial_state=None, output_final_state=False, seq_idx=None,
backend="auto") -> (o, final_state)``, the semantics and (batch, T, heads, dim) layout of fla's
``chunk_dplr_delta_rule``, so the two can be swapped.

Per head, with the state S of shape (K, V) and row vectors q_t, k_t, a_t, b_t (K numbers) and v_t (V numbers):

    S_t = (diag(exp(gk_t)) + b_t^T a_t) S_{t-1} + k_t^T v_t,        o_t = scale * q_t S_t

gk is the log decay per key channel (usually < 0), a_t reads the old state (u_t = a_t S_{t-1}) and b_t writes
that read back; scale defaults to K^-0.5. fla writes the same recurrence on the transposed (V, K) state,
S_t = S_{t-1} (Diag(exp(gk_t)) + a_t b_t^T) + v_t k_t^T (its docstring), and its naive ``dplr_recurrence`` computes
exactly the form above; states are stored as (B, H, K, V) by both. RWKV-7 calls it with a = -kk, b = kk * iclr
(kk the normalised removal key, iclr the in-context learning rate in (0, 1)), scale 1.

Returns o (B, T, H, V) in q's dtype and, when ``output_final_state``, S_T (B, H, K, V) in float32 (float64 for
float64 inputs); else None. ``initial_state`` (B, H, K, V) is S_{-1} (zeros when None). ``seq_idx`` (B, T)
integer, packed documents (ops.packing): the state restarts at every document start; ``initial_state`` is the
state before each row's first document and the final state is that of each row's last document (fla's
``cu_seqlens`` semantics). All inputs get gradients.

Backends: "reference" (reference.py, any device), "fla" (fla's chunk kernel; its fused recurrent kernel for a
single step without gradients; CUDA with fla-core installed), "auto" = fla when that is possible, else on CPU the
compiled C kernel (cpu.py, the per-step recurrence; when a C compiler builds it), else the reference.
"""
import torch

from ops._backend import resolve_peer_backend
from ops.packing import DocumentLayout, check_seq_idx

__all__ = ["dplr_delta_rule"]


def _check(q, k, v, a, b, gk, initial_state):
    if q.dim() != 4 or any(x.shape != q.shape for x in (k, a, b, gk)) or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError("dplr_delta_rule: expected q, k, a, b, gk (B, T, H, K) and v (B, T, H, V), got "
                         + ", ".join(f"{n} {tuple(x.shape)}" for n, x in zip("q k v a b gk".split(), (q, k, v, a, b, gk))))
    if q.shape[1] == 0:
        raise ValueError(f"dplr_delta_rule: T must be at least 1, got q {tuple(q.shape)}")
    B, _, H, K = q.shape
    if initial_state is not None and tuple(initial_state.shape) != (B, H, K, v.shape[-1]):
        raise ValueError(f"dplr_delta_rule: initial_state must be (B, H, K, V) = {(B, H, K, v.shape[-1])}, "
                         f"got {tuple(initial_state.shape)}")


def cpu_kernel_runs(backend: str, q: torch.Tensor) -> bool:
    """backend="auto" on CPU takes the compiled C kernel when it builds here."""
    if backend != "auto" or q.device.type != "cpu":
        return False
    from ops.dplr_delta_rule import cpu
    return cpu.available()


def dplr_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                    gk: torch.Tensor, scale: float | None = None, initial_state: torch.Tensor | None = None,
                    output_final_state: bool = False, seq_idx: torch.Tensor | None = None, backend: str = "auto"):
    """S_t = (diag(exp(gk_t)) + b_t^T a_t) S_{t-1} + k_t^T v_t, o_t = scale * q_t S_t; returns (o, final_state)."""
    _check(q, k, v, a, b, gk, initial_state)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    chosen = resolve_peer_backend(backend, q.device, "dplr_delta_rule", peer="fla", package="fla",
                                  install="pip install zoo[fla]")
    if chosen == "fla":
        from ops.dplr_delta_rule.fla import dplr_delta_rule_fla as run
    elif cpu_kernel_runs(backend, q):
        from ops.dplr_delta_rule.cpu import dplr_delta_rule_cpu as run
    else:
        from ops.dplr_delta_rule.reference import dplr_delta_rule_chunked as run
    if seq_idx is None:
        return run(q, k, v, a, b, gk, scale, initial_state, output_final_state)
    check_seq_idx(seq_idx, q.shape[0], q.shape[1], "dplr_delta_rule")
    # every document in its own row (zero padding after it leaves its state unchanged)
    layout = DocumentLayout(seq_idx)
    document = layout.document.view(seq_idx.shape)
    first, last = document[:, 0], document[:, -1]
    if initial_state is not None:
        initial_state = initial_state.new_zeros(layout.num_documents, *initial_state.shape[1:]).index_copy(
            0, first, initial_state)
    o, final_state = run(*(layout.unpack(x) for x in (q, k, v, a, b, gk)), scale, initial_state,
                         output_final_state)
    return layout.repack(o), (final_state[last] if output_final_state else None)
