"""fla's kernels for ``ops.dplr_delta_rule`` (CUDA, fla-core installed): imported only when that backend runs.

Training and prefill take fla's ``chunk_dplr_delta_rule``; a single step without gradients (decoding) takes its
``fused_recurrent_dplr_delta_rule``. Same layout and convention as ours (see the package docstring).
"""
import torch


def dplr_delta_rule_fla(q, k, v, a, b, gk, scale: float, initial_state=None, output_final_state: bool = False):
    from fla.ops.generalized_delta_rule import chunk_dplr_delta_rule, fused_recurrent_dplr_delta_rule

    if initial_state is not None:
        initial_state = initial_state.float()
    if q.shape[1] == 1 and not torch.is_grad_enabled():
        run = fused_recurrent_dplr_delta_rule
    else:
        run = chunk_dplr_delta_rule
    o, final_state = run(q, k, v, a, b, gk, scale=scale, initial_state=initial_state,
                         output_final_state=output_final_state)
    return o.to(q.dtype), final_state
