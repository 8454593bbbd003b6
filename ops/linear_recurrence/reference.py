"""The definition of the diagonal linear recurrence, in pure PyTorch (any device, float32 accumulation).

Linear form (fla ``hgrn`` semantics):   h_t = exp(g_t) * h_{t-1} + x_t
Log form (minGRU / minLSTM):            h_t = exp(log_coeffs_t) * h_{t-1} + exp(log_values_t)

Both take (batch, T, D) inputs, an optional initial state h_{-1} of shape (batch, D) given in LINEAR space (any
real value; zeros when omitted), and return h (batch, T, D) in the input dtype plus the final state h_{T-1}
(batch, D, float32; float64 for float64 inputs) when asked for.

Training path: a Hillis-Steele scan, log2(T) vectorised steps over the whole sequence (no loop per timestep).
Decays are combined as sums of log-decays over a window and exponentiated as such (<= 1 for decays <= 1), never
as exp(-cumsum), the term of the closed form that overflows on long sequences. The log form keeps the values in log
space throughout (logaddexp), so tiny values and extreme gates neither underflow early nor overflow.
"""
import torch


def _accumulation(t: torch.Tensor) -> torch.Tensor:
    """float32 for half-precision and float32 inputs; float64 stays float64."""
    return t if t.dtype == torch.float64 else t.float()


def _shift_in_time(t: torch.Tensor, k: int, fill: float) -> torch.Tensor:
    """t[:, i - k] at time i (``fill`` for i < k): the element k steps back along dim 1."""
    head = t.new_full((t.shape[0], k, t.shape[2]), fill)
    return torch.cat([head, t[:, :-k]], dim=1)


def _scan(log_a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """h_t = exp(log_a_t) h_{t-1} + b_t from h_{-1} = 0, plus the cumulative log-decay sum_{s<=t} log_a_s."""
    k = 1
    while k < b.shape[1]:
        # after this step, b_t covers the window (t - 2k, t] and log_a_t the decay across it
        b = b + torch.exp(log_a) * _shift_in_time(b, k, 0.0)
        log_a = log_a + _shift_in_time(log_a, k, 0.0)
        k *= 2
    return b, log_a


def _log_scan(log_a: torch.Tensor, log_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log h_t for h_t = exp(log_a_t) h_{t-1} + exp(log_b_t) from h_{-1} = 0, all in log space."""
    k = 1
    while k < log_b.shape[1]:
        log_b = torch.logaddexp(log_b, log_a + _shift_in_time(log_b, k, float("-inf")))
        log_a = log_a + _shift_in_time(log_a, k, 0.0)
        k *= 2
    return log_b, log_a


def _finish(h: torch.Tensor, cum_log_a: torch.Tensor, initial_state, output_final_state: bool, dtype):
    if initial_state is not None:
        # the recurrence is linear in h_{-1}: its contribution decays by the cumulative product of coefficients
        h = h + torch.exp(cum_log_a) * initial_state.to(h.dtype).unsqueeze(1)
    final_state = h[:, -1].clone() if output_final_state else None  # accumulation dtype
    return h.to(dtype), final_state


def linear_recurrence_reference(x, g, initial_state=None, output_final_state=False):
    """h_t = exp(g_t) * h_{t-1} + x_t over dim 1 of (batch, T, D) tensors; returns (h, final_state or None)."""
    h, cum_g = _scan(_accumulation(g), _accumulation(x))
    return _finish(h, cum_g, initial_state, output_final_state, x.dtype)


def log_linear_recurrence_reference(log_coeffs, log_values, initial_state=None, output_final_state=False):
    """h_t = exp(log_coeffs_t) * h_{t-1} + exp(log_values_t); returns (h, final_state or None), both linear."""
    log_h, cum_log_coeffs = _log_scan(_accumulation(log_coeffs), _accumulation(log_values))
    return _finish(torch.exp(log_h), cum_log_coeffs, initial_state, output_final_state, log_values.dtype)


def recurrent_step(h: torch.Tensor, log_coeffs: torch.Tensor, log_values: torch.Tensor) -> torch.Tensor:
    """One token of the log form in linear space, for decoding: h (batch, D) -> new h (float32 or float64)."""
    log_coeffs, log_values = _accumulation(log_coeffs), _accumulation(log_values)
    return torch.exp(log_coeffs) * h.to(log_coeffs.dtype) + torch.exp(log_values)
