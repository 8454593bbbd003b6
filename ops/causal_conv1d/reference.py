"""Depthwise causal 1-D convolution, defined in plain PyTorch (the short conv in front of Mamba's scan).

out[b, d, t] = act(bias[d] + sum_k weight[d, k] * x[b, d, t - (W - 1) + k]), where positions before the start
read ``initial_states`` (batch, dim, W - 1) when given (prefill continuation), else zeros.
"""
import torch
import torch.nn.functional as F

ACTIVATIONS = (None, "silu", "swish")


def check_activation(activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"causal_conv1d: activation={activation!r} is not one of None, 'silu', 'swish'")


def causal_conv1d(x, weight, bias=None, initial_states=None, return_final_states=False, activation=None):
    check_activation(activation)
    batch, dim, length = x.shape
    width = weight.shape[1]
    if initial_states is None:
        initial_states = x.new_zeros(batch, dim, width - 1)
    padded = torch.cat([initial_states.to(x.dtype), x], dim=-1)            # (b, d, W - 1 + L)
    acc = torch.promote_types(x.dtype, torch.float32)  # float32 at least; float64 stays float64
    out = F.conv1d(padded.to(acc), weight.to(acc)[:, None, :], bias.to(acc) if bias is not None else None,
                   groups=dim)
    return finish(out, padded, x.dtype, width, activation, return_final_states)


def causal_conv1d_packed(x, weight, bias=None, seq_idx=None, return_final_states=False, activation=None):
    """The same conv over packed rows: a tap reaching into the previous document (seq_idx differs) reads zero,
    as that document's start would read zero padding when run alone. One shifted multiply-add per tap."""
    from ops.packing import same_document_shifted

    check_activation(activation)
    batch, dim, length = x.shape
    width = weight.shape[1]
    padded = torch.cat([x.new_zeros(batch, dim, width - 1), x], dim=-1)
    acc = torch.promote_types(x.dtype, torch.float32)  # float32 at least; float64 stays float64
    x32, w32 = x.to(acc), weight.to(acc)
    out = x32 * w32[:, width - 1, None]
    for shift in range(1, min(width, length)):  # tap width - 1 - shift reads x[t - shift]
        same = same_document_shifted(seq_idx, shift)[:, None, :]
        out[..., shift:] += (x32[..., :length - shift] * w32[:, width - 1 - shift, None]) * same[..., shift:]
    if bias is not None:
        out = out + bias.to(acc)[:, None]
    return finish(out, padded, x.dtype, width, activation, return_final_states)


def finish(out, padded, dtype, width: int, activation, return_final_states: bool):
    """The float32 (or float64) conv output -> activation, input dtype, and the last W - 1 inputs when asked (every path)."""
    if activation is not None:
        out = F.silu(out)
    out = out.to(dtype)
    if return_final_states:
        return out, padded[..., padded.shape[-1] - (width - 1):].contiguous()
    return out


def causal_conv1d_step(conv_state, x, weight, bias=None, activation=None):
    """One step: x (batch, dim); conv_state (batch, dim, W - 1) holds the previous inputs and is shifted in place."""
    check_activation(activation)
    window = torch.cat([conv_state, x[..., None].to(conv_state.dtype)], dim=-1)   # (b, d, W)
    acc = torch.promote_types(x.dtype, torch.float32)  # float32 at least; float64 stays float64
    out = (window.to(acc) * weight.to(acc)).sum(-1)
    if bias is not None:
        out = out + bias.to(acc)
    if activation is not None:
        out = F.silu(out)
    conv_state.copy_(window[..., 1:])
    return out.to(x.dtype)
