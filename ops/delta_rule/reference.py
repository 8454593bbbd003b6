"""The delta rule, the definition: the gated delta rule (ops/gated_delta_rule/reference.py) with no decay.

    S_t = (I - beta_t k_t^T k_t) S_{t-1} + beta_t k_t^T v_t,        o_t = scale * q_t S_t

Both forms share that file's chunked UT-transform core and its one-step update (g = None skips the decay).
"""
from ops.gated_delta_rule.reference import gated_delta_rule_chunked, gated_delta_rule_step


def delta_rule_chunked(q, k, v, beta, scale: float | None = None, initial_state=None,
                       output_final_state: bool = False, seq_idx=None, chunk_size: int | None = None):
    """Chunked form for training and prefill: (o (B, T, H, V), final state (B, H, K, V) or None), compute dtype."""
    return gated_delta_rule_chunked(q, k, v, None, beta, scale, initial_state, output_final_state, seq_idx,
                                    chunk_size)


def delta_rule_step(q, k, v, beta, state, scale: float | None = None):
    """One decoding step: q, k (B, H, K), v (B, H, V), beta (B, H); updates ``state`` in place, returns o (B, H, V)."""
    return gated_delta_rule_step(q, k, v, None, beta, state, scale)
