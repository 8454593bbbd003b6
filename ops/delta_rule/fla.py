"""fla's delta rule kernels: ``chunk_delta_rule`` for training and prefill, ``fused_recurrent_delta_rule`` for
one-token decoding (imported inside the function: fla is optional). fla's chunk kernel refuses float32 inputs
(it asks for bfloat16), so float32 inputs take the fused recurrent kernel, which has a backward too."""
import torch

from ops.gated_delta_rule.fla import run_fla


def delta_rule_fla(q, k, v, beta, scale, initial_state, output_final_state, seq_idx):
    if q.shape[1] == 1 or q.dtype == torch.float32:
        from fla.ops.delta_rule import fused_recurrent_delta_rule as kernel
    else:
        from fla.ops.delta_rule import chunk_delta_rule as kernel
    return run_fla(kernel, q, k, v, beta, None, scale, initial_state, output_final_state, seq_idx)
