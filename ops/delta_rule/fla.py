"""fla's delta rule kernels: ``chunk_delta_rule`` for training and prefill, ``fused_recurrent_delta_rule`` for
one-token decoding (imported inside the function: fla is optional)."""
from ops.gated_delta_rule.fla import run_fla


def delta_rule_fla(q, k, v, beta, scale, initial_state, output_final_state, seq_idx):
    if q.shape[1] == 1:
        from fla.ops.delta_rule import fused_recurrent_delta_rule as kernel
    else:
        from fla.ops.delta_rule import chunk_delta_rule as kernel
    return run_fla(kernel, q, k, v, beta, None, scale, initial_state, output_final_state, seq_idx)
