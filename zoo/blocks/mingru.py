"""minGRU and minLSTM, the minimal RNNs of Feng et al. 2024, "Were RNNs All We Needed?".

Gates and candidate state depend only on the input x_t, never on h_{t-1}, so the recurrence is a diagonal linear
one, h_t = a_t * h_{t-1} + b_t, trained in parallel over time by ``ops.log_linear_recurrence``:

    minGRU:  z_t = sigmoid(k_t), h~_t = g(u_t)        h_t = (1 - z_t) h_{t-1} + z_t h~_t
    minLSTM: f_t = sigmoid(k^f_t), i_t = sigmoid(k^i_t), f' = f / (f + i), i' = i / (f + i)
                                                      h_t = f'_t h_{t-1} + i'_t h~_t

with g(x) = x + 0.5 for x >= 0, sigmoid(x) otherwise (positive, so h stays positive from h_0 = 0), and
(k, [k^i,] u) = W x_t one bias-free projection. Coefficients and values are formed as logs in float32
(log z = -softplus(-k), log(1 - z) = -softplus(k), log f' = -softplus(log i - log f), ...), which never overflow
or lose the small gates to rounding. The hidden width is d_model * expand; an output projection maps it back to
d_model, also when expand == 1 (the block then has a learned output mixing like attention's o_proj, and one
parameter layout for every expand).

Decoding state: h (d_hidden numbers per sequence); one step is O(d_hidden).

Packed rows (``seq_idx``): the coefficient into each document's first position is 0 (log -inf), so h restarts
from h_0 = 0 there; both recurrence backends take that as it is (exp(-inf) = 0).
"""
import torch
import torch.nn.functional as F
from torch import nn

from ops.linear_recurrence import log_linear_recurrence
from ops.linear_recurrence.reference import recurrent_step
from ops.packing import document_starts
from zoo.blocks.base import Cache, Mixer
from zoo.blocks.registry import register_mixer
from zoo.checks import require_positive_int


def log_g(x: torch.Tensor) -> torch.Tensor:
    """log of g(x) = x + 0.5 (x >= 0) | sigmoid(x) (x < 0); both branches finite everywhere (no NaN grads)."""
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


class _MinimalRNN(Mixer):
    """Shared body: input projection -> log gates -> diagonal recurrence -> output projection."""

    n_gates = 1
    backends = ("auto", "reference", "triton")  # fla (the peer) is Triton itself: no CUDA-package path

    def __init__(self, d_model: int, layer_idx: int = 0, backend: str = "auto", expand: int = 1):
        super().__init__(d_model, layer_idx, backend)
        require_positive_int("expand", expand, type(self).__name__)
        self.expand = expand
        self.d_hidden = d_model * expand
        self.in_proj = nn.Linear(d_model, (self.n_gates + 1) * self.d_hidden, bias=False)
        self.out_proj = nn.Linear(self.d_hidden, d_model, bias=False)

    def log_coeffs_and_values(self, projected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log a_t, log b_t) of h_t = a_t h_{t-1} + b_t from the input projection (float32 or float64)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, cache: Cache | None = None, seq_idx: torch.Tensor | None = None) -> torch.Tensor:
        self.check_packing(x, cache, seq_idx)
        projected = self.in_proj(x)
        log_coeffs, log_values = self.log_coeffs_and_values(projected.to(torch.promote_types(projected.dtype, torch.float32)))
        if seq_idx is not None:  # forget everything before a document's first token
            log_coeffs = log_coeffs.masked_fill(document_starts(seq_idx)[..., None], float("-inf"))
        if cache is None:
            h, _ = log_linear_recurrence(log_coeffs, log_values, backend=self.backend)
        elif x.shape[1] == 1:  # decode: one O(d_hidden) step
            state = recurrent_step(cache["h"], log_coeffs[:, 0], log_values[:, 0])
            cache["h"].copy_(state.detach())
            h = state.unsqueeze(1)
        else:  # prefill from the cached state; a clone, since the cache is overwritten in place below
            h, final = log_linear_recurrence(log_coeffs, log_values, cache["h"].clone(), output_final_state=True,
                                             backend=self.backend)
            cache["h"].copy_(final.detach())  # the cache holds state, not autograd graph
        if cache is not None:
            cache.seen += x.shape[1]
        return self.out_proj(h.to(x.dtype))

    def allocate_cache(self, batch_size: int, device=None, dtype=None) -> Cache:
        """h_0 = 0, float32 unless ``dtype`` is given (the state is accumulated over every decoded token)."""
        device = device if device is not None else self.in_proj.weight.device
        return Cache(h=torch.zeros(batch_size, self.d_hidden, device=device, dtype=dtype or torch.float32))

    def state_size(self, seq_len: int) -> int:
        return self.d_hidden


@register_mixer("mingru")
class MinGRU(_MinimalRNN):
    """minGRU: h_t = (1 - z_t) h_{t-1} + z_t g(u_t), z_t = sigmoid(k_t); (k, u) = W x_t."""

    n_gates = 1

    def log_coeffs_and_values(self, projected):
        k, u = projected.chunk(2, dim=-1)
        log_one_minus_z = -F.softplus(k)
        log_z = -F.softplus(-k)
        return log_one_minus_z, log_z + log_g(u)


@register_mixer("minlstm")
class MinLSTM(_MinimalRNN):
    """minLSTM: h_t = f'_t h_{t-1} + i'_t g(u_t), with (f', i') = (f, i) / (f + i); (k^f, k^i, u) = W x_t."""

    n_gates = 2

    def log_coeffs_and_values(self, projected):
        k_f, k_i, u = projected.chunk(3, dim=-1)
        log_i_over_f = F.softplus(-k_f) - F.softplus(-k_i)  # log i - log f
        log_f_normed = -F.softplus(log_i_over_f)           # log f - log(f + i)
        log_i_normed = -F.softplus(-log_i_over_f)          # log i - log(f + i)
        return log_f_normed, log_i_normed + log_g(u)
