"""Gated delta rule: ``gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None,
output_final_state=False, seq_idx=None, backend="auto")``, fla's ``chunk_gated_delta_rule`` semantics and layout.

    S_t = exp(g_t) (I - beta_t k_t^T k_t) S_{t-1} + beta_t k_t^T v_t,        o_t = scale * q_t S_t

q, k (B, T, H, K), v (B, T, H, V), g (B, T, H) the log decay (<= 0 for a decay), beta (B, T, H) (in (0, 2)
with fla's ``allow_neg_eigval``), state (B, H, K, V); scale defaults to K^-0.5; q and k are used as given
(normalise them before, as fla's layers do with ``use_qk_l2norm_in_kernel``). reference.py is the definition.
"""
from ops.gated_delta_rule import cpu
from ops.gated_delta_rule.inputs import prepare_call
from ops.gated_delta_rule.reference import gated_delta_rule_chunked


def gated_delta_rule(q, k, v, g, beta, scale: float | None = None, initial_state=None,
                     output_final_state: bool = False, seq_idx=None, backend: str = "auto",
                     chunk_size: int | None = None):
    """Returns (o (B, T, H, V) in q's dtype, final state (B, H, K, V) float32 (float64 for float64 inputs) or None).

    initial_state (B, H, K, V): the state before the first token. seq_idx (B, T) integer, packed rows (see
    ops.packing): the state restarts at every document start after position 0; initial_state is the first
    document's and the final state the last one's. backend: "auto" (fla's kernels on CUDA when fla is installed;
    on CPU the compiled DPLR kernel when it builds, see cpu.py; else the reference), "reference", "fla".
    chunk_size: the reference's chunk length (None: 16 up to 256 tokens, else 32; not used by the CPU kernel).
    """
    scale, chosen = prepare_call("gated_delta_rule", q, k, v, beta, g, initial_state, seq_idx, scale, backend)
    if chosen == "fla":
        from ops.gated_delta_rule.fla import gated_delta_rule_fla
        o, final = gated_delta_rule_fla(q, k, v, g, beta, scale, initial_state, output_final_state, seq_idx)
    elif cpu.runs(backend, q):
        o, final = cpu.gated_delta_rule_cpu(q, k, v, g, beta, scale, initial_state, output_final_state, seq_idx)
    else:
        o, final = gated_delta_rule_chunked(q, k, v, g, beta, scale, initial_state, output_final_state, seq_idx,
                                            chunk_size)
    return o.to(q.dtype), final


__all__ = ["gated_delta_rule"]
