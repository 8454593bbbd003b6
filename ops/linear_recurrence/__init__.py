"""Diagonal linear recurrence, the scan behind HGRN, minGRU and minLSTM.

``linear_recurrence(x, g, ...)``: h_t = exp(g_t) * h_{t-1} + x_t, the semantics and (batch, T, D) layout of fla's
``chunk_hgrn`` / ``fused_recurrent_hgrn`` (g is a log-decay, usually <= 0), so the two can be swapped.

``log_linear_recurrence(log_coeffs, log_values, ...)``: h_t = exp(log_coeffs_t) * h_{t-1} + exp(log_values_t),
the form minGRU / minLSTM produce (gates and candidate values are computed as logs for stability).

Both return ``(h, final_state)``: h (batch, T, D) in the dtype of ``x`` / ``log_values``, final_state
(batch, D) float32 (float64 for float64 inputs; the Triton kernel computes in float32) when
``output_final_state`` else None. ``initial_state`` is h_{-1} of shape (batch, D) in
LINEAR space for both forms (any real value; zeros when None), so a final state can be fed back as the next
call's initial state. All inputs get gradients.
"""
import torch

from ops._backend import resolve_backend

__all__ = ["linear_recurrence", "log_linear_recurrence"]


def _check(op: str, a: torch.Tensor, b: torch.Tensor, initial_state, names: tuple[str, str]):
    if a.dim() != 3 or a.shape != b.shape:
        raise ValueError(f"{op}: {names[0]} and {names[1]} must both be (batch, T, D); "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[1] == 0:
        raise ValueError(f"{op}: T must be at least 1, got shape {tuple(a.shape)}")
    if initial_state is not None and tuple(initial_state.shape) != (a.shape[0], a.shape[2]):
        raise ValueError(f"{op}: initial_state must be (batch, D) = {(a.shape[0], a.shape[2])}, "
                         f"got {tuple(initial_state.shape)}")


def linear_recurrence(x: torch.Tensor, g: torch.Tensor, initial_state: torch.Tensor | None = None,
                      output_final_state: bool = False, backend: str = "auto"):
    """h_t = exp(g_t) * h_{t-1} + x_t along dim 1; returns (h, final_state or None)."""
    _check("linear_recurrence", x, g, initial_state, ("x", "g"))
    if resolve_backend(backend, x.device, "linear_recurrence") == "triton":
        from ops.linear_recurrence.triton import linear_recurrence_triton as run
    else:
        from ops.linear_recurrence.reference import linear_recurrence_reference as run
    return run(x, g, initial_state, output_final_state)


def log_linear_recurrence(log_coeffs: torch.Tensor, log_values: torch.Tensor,
                          initial_state: torch.Tensor | None = None, output_final_state: bool = False,
                          backend: str = "auto"):
    """h_t = exp(log_coeffs_t) * h_{t-1} + exp(log_values_t) along dim 1; returns (h, final_state or None)."""
    _check("log_linear_recurrence", log_coeffs, log_values, initial_state, ("log_coeffs", "log_values"))
    if resolve_backend(backend, log_values.device, "log_linear_recurrence") == "triton":
        from ops.linear_recurrence.triton import log_linear_recurrence_triton as run
    else:
        from ops.linear_recurrence.reference import log_linear_recurrence_reference as run
    return run(log_coeffs, log_values, initial_state, output_final_state)
