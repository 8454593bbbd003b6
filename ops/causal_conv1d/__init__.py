"""Depthwise causal conv1d: ``causal_conv1d(x, weight, ...)`` following causal_conv1d's ``causal_conv1d_fn``."""

import torch

from ops._backend import resolve_backend


def _compiled_fits(x, initial_states) -> bool:
    """The compiled CPU kernel (cpu.py) takes this call: no initial states, not float64, and it builds here."""
    if initial_states is not None or x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return False
    from ops.causal_conv1d import cpu
    return cpu.available()


def causal_conv1d(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                  final_states_out=None, activation=None, backend="auto"):
    """x (batch, dim, L), weight (dim, W), bias (dim,), activation None | "silu" | "swish".

    Same positional order as causal_conv1d's ``causal_conv1d_fn``. ``seq_idx`` (batch, L) integer, packed
    sequences (see ops.packing): taps never reach into the previous document; every backend takes it (CPU and
    reference run ``reference.causal_conv1d_packed``), without initial_states. ``final_states_out``, when given,
    receives the final states in place.

    initial_states (batch, dim, W - 1): the inputs before x (prefill continuation). With return_final_states,
    returns (out, final_states (batch, dim, W - 1)), the last W - 1 inputs, ready to continue from.
    backend: "cuda" uses the causal_conv1d package; "auto" on CPU runs the compiled kernel of ``cpu.py`` where it
    builds (without initial states; not float64), else ``shifted.py`` (W shifted multiply-adds, faster there
    than F.conv1d); every other choice runs the reference, whose depthwise F.conv1d is already a single cuDNN
    call on GPU (there is no Triton kernel for this op).
    """
    which = resolve_backend(backend, x.device, "causal_conv1d", cuda_package="causal_conv1d")
    if which == "cuda":
        from ops.causal_conv1d.cuda import causal_conv1d as cuda_conv
        return cuda_conv(x, weight, bias, seq_idx, initial_states, return_final_states, final_states_out, activation)
    if seq_idx is not None:
        from ops.causal_conv1d.reference import causal_conv1d_packed
        from ops.packing import check_seq_idx
        check_seq_idx(seq_idx, x.shape[0], x.shape[-1], "causal_conv1d")
        if initial_states is not None:
            raise ValueError("causal_conv1d: seq_idx (packed sequences) cannot be combined with initial_states")
        result = causal_conv1d_packed(x, weight, bias, seq_idx, return_final_states, activation)
    elif backend == "auto" and x.device.type == "cpu" and _compiled_fits(x, initial_states):
        from ops.causal_conv1d.cpu import causal_conv1d as conv
        result = conv(x, weight, bias, return_final_states, activation)
    elif backend == "auto" and x.device.type == "cpu":  # shifted multiply-adds beat depthwise F.conv1d on CPU
        from ops.causal_conv1d.shifted import causal_conv1d as conv
        result = conv(x, weight, bias, initial_states, return_final_states, activation)
    else:
        from ops.causal_conv1d.reference import causal_conv1d as conv
        result = conv(x, weight, bias, initial_states, return_final_states, activation)
    if return_final_states and final_states_out is not None:
        final_states_out.copy_(result[1])
        result = (result[0], final_states_out)
    return result


__all__ = ["causal_conv1d"]
