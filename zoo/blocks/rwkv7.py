"""RWKV-7 time mixing ("Goose", Peng et al. 2025), compatible with fla's ``fla.layers.rwkv7.RWKV7Attention``.

Same hyperparameter names and defaults, parameter names and shapes as fla's layer (fuse_norm=False, its default),
so a state dict saved by either loads into the other and gives the same outputs (tests/peers/test_fla_rwkv7.py).
Only the leading arguments follow the zoo's mixer contract: ``RWKV7(d_model, layer_idx=0, backend="auto", ...)``;
fla's ``hidden_size`` is ``d_model``.

Per token, with the token shift delta_t = x_{t-1} - x_t (x_{-1} = 0, or the cache's last token):

    x_c   = x + delta * x_c                               for c in r, w, k, v, a, g (learned mixes)
    r, k, v = r_proj(x_r), k_proj(x_k), v_proj(x_v)
    w     = -exp(-1/2) * sigmoid(w_lora(x_w))             log decay in (-0.607, 0), per key channel
    v     = lerp(v, v_first, sigmoid(v_lora(x_v)))        layers after the first: the value residual
    iclr  = sigmoid(a_lora(x_a));  g = g_lora(x_g)        in-context learning rate; output gate
    kk    = normalize(k * k_k) per head;  k = k * (1 + (iclr - 1) * k_a)
    o     = dplr_delta_rule(q=r, k, v, a=-kk, b=kk * iclr, gk=w, scale=1)
    out   = o_proj((group_norm(o) + (sum(r * k * r_k) per head) v) * g)

i.e. S_t = (diag(exp(w_t)) - kk_t^T (kk_t * iclr_t)) S_{t-1} + k_t^T v_t per head (ops.dplr_delta_rule).

The value residual: the first RWKV-7 layer's values v_first are mixed into every later RWKV-7 layer's values.
The trunk carries them in ``cross_layer``, a dict that ``zoo.model.LM`` hands, fresh for each forward call, to
every mixer whose forward takes that keyword; the first RWKV-7 layer to run (layer_idx 0, or no values there yet)
stores its values under ``VALUE_RESIDUAL_KEY`` and later ones read them. Without ``cross_layer`` (a block used
alone) the block acts as a first layer. v_first is a per-token quantity, so decoding needs no extra state.

Decoding keeps the (H, K, V) state per head in float32 and the last token (d_model numbers) for the token shift.
Packed rows (``seq_idx``): the shift reads zeros at a document start and the recurrence restarts there.

Initialisation follows fla's (RWKV-7's: x_* mixes, k_k, k_a, r_k, the LoRA biases, g_norm's weight, orthogonal
projections), with two changes so that every parameter gets a gradient at the first step: fla zeroes o_proj and
the first matrix of each LoRA; here they start small (orthogonal, gain 0.1). fla needs ``num_hidden_layers`` for
its depth-dependent init; None here means max(2, layer_idx + 1).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from ops._backend import resolve_peer_backend
from ops.dplr_delta_rule import dplr_delta_rule
from ops.dplr_delta_rule.reference import dplr_delta_rule_step
from ops.packing import same_document_shifted
from zoo.blocks.base import Cache, Mixer
from zoo.blocks.registry import register_mixer
from zoo.checks import require_positive_int

VALUE_RESIDUAL_KEY = "rwkv7.v_first"
LOG_DECAY_BOUND = math.exp(-0.5)  # w = -exp(-0.5) * sigmoid(.): RWKV-7's exp(-exp(-softplus(-x) - 0.5)) decay
SMALL_INIT_GAIN = 0.1


class LoRA(nn.Module):
    """x -> up(activation(down(x))): the low-rank paths of RWKV-6/7, with fla's module and parameter names."""

    ACTIVATIONS = {None: nn.Identity, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}

    def __init__(self, input_dim: int, output_dim: int, low_rank_dim: int, bias: bool = True,
                 activation: str | None = "tanh"):
        super().__init__()
        self.lora = nn.Sequential(nn.Linear(input_dim, low_rank_dim, bias=False), self.ACTIVATIONS[activation](),
                                  nn.Linear(low_rank_dim, output_dim, bias=bias))
        with torch.no_grad():
            nn.init.orthogonal_(self.lora[0].weight, gain=SMALL_INIT_GAIN)  # fla: zeros (see the module docstring)
            up = self.lora[2].weight
            gain = math.sqrt(up.shape[1] / up.shape[0]) if up.shape[1] > up.shape[0] else 1.0
            nn.init.orthogonal_(up, gain=gain * 0.1)
            if bias:
                nn.init.zeros_(self.lora[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lora(x)


def _default_low_rank(scale: float, hidden_size: int, factor: float = 1.0) -> int:
    """fla's default LoRA widths: scale * sqrt(hidden_size) * factor rounded to a multiple of 32, at least 32."""
    return max(32, int(round(scale * hidden_size ** 0.5 * factor / 32) * 32))


@register_mixer("rwkv7")
class RWKV7(Mixer):
    backends = ("auto", "reference", "fla")

    def __init__(self, d_model: int, layer_idx: int = 0, backend: str = "auto", head_dim: int | None = None,
                 num_heads: int | None = None, decay_low_rank_dim: int | None = None,
                 gate_low_rank_dim: int | None = None, a_low_rank_dim: int | None = None,
                 v_low_rank_dim: int | None = None, elementwise_affine: bool = True, norm_eps: float = 1e-5,
                 value_dim: int | None = None, num_hidden_layers: int | None = None):
        """head_dim: fla's default is 64; when neither head_dim nor num_heads is given, head_dim is
        min(64, d_model) (one head below d_model 64). The LoRA widths default to fla's formulas."""
        super().__init__(d_model, layer_idx, backend)
        owner = "RWKV7"
        for name, value in (("head_dim", head_dim), ("num_heads", num_heads), ("value_dim", value_dim),
                            ("decay_low_rank_dim", decay_low_rank_dim), ("gate_low_rank_dim", gate_low_rank_dim),
                            ("a_low_rank_dim", a_low_rank_dim), ("v_low_rank_dim", v_low_rank_dim),
                            ("num_hidden_layers", num_hidden_layers)):
            if value is not None:
                require_positive_int(name, value, owner)
        if isinstance(norm_eps, bool) or not isinstance(norm_eps, (int, float)) or not norm_eps > 0:
            raise ValueError(f"{owner}: norm_eps must be a positive number, got {norm_eps!r}")
        if head_dim is None and num_heads is None:
            head_dim = min(64, d_model)
        if head_dim is not None:
            if d_model % head_dim:
                raise ValueError(f"{owner}: head_dim={head_dim} must divide d_model={d_model}")
            num_heads = d_model // head_dim
        elif d_model % num_heads:
            raise ValueError(f"{owner}: num_heads={num_heads} must divide d_model={d_model}")
        value_dim = d_model if value_dim is None else value_dim
        if value_dim % num_heads:
            raise ValueError(f"{owner}: num_heads={num_heads} must divide value_dim={value_dim}")
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.key_dim, self.value_dim, self.head_v_dim = d_model, value_dim, value_dim // num_heads
        self.num_hidden_layers = max(2, layer_idx + 1) if num_hidden_layers is None else num_hidden_layers
        factor = self.head_dim / 64  # fla widens the decay and a paths for heads over 64
        self.decay_low_rank_dim = decay_low_rank_dim or _default_low_rank(2.5, d_model, factor)
        self.gate_low_rank_dim = gate_low_rank_dim or _default_low_rank(5, d_model)
        self.a_low_rank_dim = a_low_rank_dim or _default_low_rank(2.5, d_model, factor)
        self.v_low_rank_dim = v_low_rank_dim or _default_low_rank(1.7, d_model, factor)

        for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            setattr(self, name, nn.Parameter(torch.zeros(1, 1, d_model)))
        self.k_k = nn.Parameter(torch.zeros(self.key_dim))
        self.k_a = nn.Parameter(torch.zeros(self.key_dim))
        self.r_k = nn.Parameter(torch.zeros(num_heads, self.head_dim))
        self.r_proj = nn.Linear(d_model, self.key_dim, bias=False)
        self.k_proj = nn.Linear(d_model, self.key_dim, bias=False)
        self.v_proj = nn.Linear(d_model, value_dim, bias=False)
        self.o_proj = nn.Linear(value_dim, d_model, bias=False)
        self.w_lora = LoRA(d_model, self.key_dim, self.decay_low_rank_dim, activation="tanh")
        if layer_idx != 0:  # as fla: the first layer has no value residual to gate
            self.v_lora = LoRA(d_model, value_dim, self.v_low_rank_dim, activation=None)
        self.a_lora = LoRA(d_model, self.key_dim, self.a_low_rank_dim, activation=None)
        self.g_lora = LoRA(d_model, value_dim, self.gate_low_rank_dim, activation="sigmoid", bias=False)
        self.g_norm = nn.GroupNorm(num_heads, value_dim, eps=self.head_dim * norm_eps, affine=elementwise_affine)
        self._init_like_rwkv7()

    @torch.no_grad()
    def _init_like_rwkv7(self):
        """fla's RWKV7Attention._initialize_weights (the RWKV-7 recipe), except o_proj (see the module docstring)."""
        D, layers = self.d_model, self.num_hidden_layers
        depth = self.layer_idx / (layers - 1)             # 0 at the first layer, 1 at the last
        remaining = 1.0 - self.layer_idx / layers         # 1 at the first layer, towards 0
        n = torch.arange(D, dtype=torch.float64)
        ddd = n / D
        linear = n / (D - 1) - 0.5 if D > 1 else torch.zeros(1, dtype=torch.float64)
        centred = (n % self.head_dim - (self.head_dim - 1) / 2) / max((self.head_dim - 1) / 2, 1e-12)
        zigzag = centred * centred.abs()
        www = -6 + 6 * (n / max(D - 1, 1)) ** (1 + depth ** 0.3)
        for name, power in (("x_r", 0.2), ("x_w", 0.9), ("x_k", 0.7), ("x_v", 0.7), ("x_a", 0.9), ("x_g", 0.2)):
            getattr(self, name).copy_((1.0 - ddd ** (power * remaining)).view(1, 1, D))
        self.k_a.fill_(1.02)
        self.r_k.fill_(-0.04)
        self.k_k.copy_(0.71 - linear * 0.1)
        self.w_lora.lora[2].bias.copy_(www + 0.5 + zigzag * 2.5)
        self.a_lora.lora[2].bias.copy_(-0.19 + zigzag * 0.3 + linear * 0.4)
        if self.layer_idx != 0:
            v_linear = torch.arange(self.value_dim, dtype=torch.float64) / max(self.value_dim - 1, 1) - 0.5
            self.v_lora.lora[2].bias.copy_(0.73 - v_linear * 0.4)
        if self.g_norm.weight is not None:
            self.g_norm.weight.fill_(((self.layer_idx + 1) / layers) ** 0.7)
        nn.init.orthogonal_(self.r_proj.weight)
        nn.init.orthogonal_(self.k_proj.weight, gain=0.1)
        nn.init.orthogonal_(self.v_proj.weight)
        nn.init.orthogonal_(self.o_proj.weight, gain=SMALL_INIT_GAIN)  # fla: zeros

    def _token_shift(self, x: torch.Tensor, cache: Cache | None, seq_idx: torch.Tensor | None) -> torch.Tensor:
        """delta_t = x_{t-1} - x_t, with zeros before the first token (or the cache's last token) and at every
        document start."""
        first = x.new_zeros(x.shape[0], 1, x.shape[2]) if cache is None else cache["shift"].to(x.dtype)[:, None]
        previous = torch.cat([first, x[:, :-1]], dim=1)
        if seq_idx is not None:
            previous = previous * same_document_shifted(seq_idx, 1).unsqueeze(-1).to(x.dtype)
        return previous - x

    def _values(self, v: torch.Tensor, xv: torch.Tensor, cross_layer: dict | None) -> torch.Tensor:
        """The value residual: the first layer publishes its values, later layers mix them in."""
        v_first = None if cross_layer is None or self.layer_idx == 0 else cross_layer.get(VALUE_RESIDUAL_KEY)
        if v_first is None:
            if cross_layer is not None:
                cross_layer[VALUE_RESIDUAL_KEY] = v
            return v
        if v_first.shape != v.shape:
            raise ValueError(f"RWKV7 (layer {self.layer_idx}): the first layer's values have shape "
                             f"{tuple(v_first.shape)}, this layer's {tuple(v.shape)}; every RWKV-7 layer of a "
                             "model needs the same value_dim")
        return torch.lerp(v, v_first.to(v.dtype), torch.sigmoid(self.v_lora(xv)))

    def forward(self, x: torch.Tensor, cache: Cache | None = None, seq_idx: torch.Tensor | None = None,
                cross_layer: dict | None = None) -> torch.Tensor:
        self.check_packing(x, cache, seq_idx)
        B, T, _ = x.shape
        H, K, V = self.num_heads, self.head_dim, self.head_v_dim
        delta = self._token_shift(x, cache, seq_idx)
        xr, xw, xk, xv, xa, xg = (torch.addcmul(x, delta, mix) for mix in
                                  (self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g))
        r = self.r_proj(xr)
        w = -LOG_DECAY_BOUND * torch.sigmoid(self.w_lora(xw))
        k = self.k_proj(xk)
        v = self._values(self.v_proj(xv), xv, cross_layer)
        iclr = torch.sigmoid(self.a_lora(xa))
        g = self.g_lora(xg)
        kk = F.normalize((k * self.k_k).view(B, T, H, K), dim=-1)
        k = k.addcmul(k * (iclr - 1), self.k_a)
        r, w, k, iclr = (t.view(B, T, H, K) for t in (r, w, k, iclr))
        v = v.view(B, T, H, V)
        o = self._recurrence(r, k, v, -kk, kk * iclr, w, cache, seq_idx)
        o = self.g_norm(o.reshape(B * T, H * V)).view(B, T, H, V)
        bonus = (r * k * self.r_k).sum(-1, keepdim=True) * v   # fla's "gate output correction"
        if cache is not None:
            cache["shift"].copy_(x[:, -1])
            cache.seen += T
        return self.o_proj(((o + bonus).reshape(B, T, self.value_dim) * g))

    def _recurrence(self, r, k, v, a, b, w, cache, seq_idx) -> torch.Tensor:
        if cache is None:
            o, _ = dplr_delta_rule(r, k, v, a, b, w, scale=1.0, seq_idx=seq_idx, backend=self.backend)
            return o
        state = cache["state"]
        on_reference = resolve_peer_backend(self.backend, r.device, "RWKV7", peer="fla", package="fla",
                                            install="pip install zoo[fla]") == "reference"
        if r.shape[1] == 1 and on_reference:
            o, new_state = dplr_delta_rule_step(r[:, 0], k[:, 0], v[:, 0], a[:, 0], b[:, 0], w[:, 0], state, 1.0)
            o = o.unsqueeze(1)
        else:  # prefill (any length) from the cached state, or fla's kernels
            o, new_state = dplr_delta_rule(r, k, v, a, b, w, scale=1.0, initial_state=state,
                                           output_final_state=True, backend=self.backend)
        state.copy_(new_state)
        return o

    def allocate_cache(self, batch_size: int, device=None, dtype=None) -> Cache:
        device = self.o_proj.weight.device if device is None else device
        dtype = dtype or self.o_proj.weight.dtype
        # the state is a running product over every token seen: float32 at least, whatever the model dtype
        state_dtype = torch.promote_types(dtype, torch.float32)
        return Cache(
            state=torch.zeros(batch_size, self.num_heads, self.head_dim, self.head_v_dim, device=device,
                              dtype=state_dtype),
            shift=torch.zeros(batch_size, self.d_model, device=device, dtype=dtype),
        )

    def state_size(self, seq_len: int) -> int:
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 0:
            raise ValueError(f"RWKV7: seq_len must be a non-negative integer, got {seq_len!r}")
        return self.num_heads * self.head_dim * self.head_v_dim + self.d_model

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, num_heads={self.num_heads}, head_dim={self.head_dim}, "
                f"value_dim={self.value_dim}, layer_idx={self.layer_idx}, backend={self.backend!r}")
