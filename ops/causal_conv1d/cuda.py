"""Adapter to the causal_conv1d package's CUDA ``causal_conv1d_fn`` (optional, imported only when this runs)."""
import torch


def causal_conv1d(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                  final_states_out=None, activation=None):
    from causal_conv1d import causal_conv1d_fn
    if seq_idx is not None:
        seq_idx = seq_idx.to(torch.int32).contiguous()  # the package reads int32 document indices
    if initial_states is not None or return_final_states or seq_idx is not None:
        # the package takes initial/final states and seq_idx only with a channel-last x
        x = x.transpose(1, 2).contiguous().transpose(1, 2)
        if initial_states is not None:
            initial_states = initial_states.to(x.dtype).transpose(1, 2).contiguous().transpose(1, 2)
    return causal_conv1d_fn(x, weight, bias, seq_idx=seq_idx, initial_states=initial_states,
                            return_final_states=return_final_states, final_states_out=final_states_out,
                            activation=activation)
