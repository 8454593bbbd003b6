"""Delta rule: ``delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False,
seq_idx=None, backend="auto")``, fla's ``chunk_delta_rule`` semantics and layout.

    S_t = (I - beta_t k_t^T k_t) S_{t-1} + beta_t k_t^T v_t,        o_t = scale * q_t S_t

q, k (B, T, H, K), v (B, T, H, V), beta (B, T, H) (in (0, 2) with fla's ``allow_neg_eigval``), state
(B, H, K, V); scale defaults to K^-0.5; q and k are used as given (fla's layers L2-normalise them first).
The definition is the gated delta rule's with no decay (g = 0): reference.py here names it, and the chunked
UT-transform core lives in ops/gated_delta_rule/reference.py.
"""
from ops.delta_rule.reference import delta_rule_chunked
from ops.gated_delta_rule import cpu
from ops.gated_delta_rule.inputs import prepare_call


def delta_rule(q, k, v, beta, scale: float | None = None, initial_state=None, output_final_state: bool = False,
               seq_idx=None, backend: str = "auto", chunk_size: int | None = None):
    """Returns (o (B, T, H, V) in q's dtype, final state (B, H, K, V) float32 (float64 for float64 inputs) or None).

    initial_state, seq_idx, backend and chunk_size as in ``ops.gated_delta_rule``.
    """
    scale, chosen = prepare_call("delta_rule", q, k, v, beta, None, initial_state, seq_idx, scale, backend)
    if chosen == "fla":
        from ops.delta_rule.fla import delta_rule_fla
        o, final = delta_rule_fla(q, k, v, beta, scale, initial_state, output_final_state, seq_idx)
    elif cpu.runs(backend, q):  # the compiled DPLR kernel with no decay (ops/gated_delta_rule/cpu.py)
        o, final = cpu.gated_delta_rule_cpu(q, k, v, None, beta, scale, initial_state, output_final_state, seq_idx)
    else:
        o, final = delta_rule_chunked(q, k, v, beta, scale, initial_state, output_final_state, seq_idx, chunk_size)
    return o.to(q.dtype), final


__all__ = ["delta_rule"]
