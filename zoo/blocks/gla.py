"""Gated linear attention (Yang et al. 2024, "Gated Linear Attention Transformers with Hardware-Efficient
Training"), compatible with fla's ``fla.layers.gla.GatedLinearAttention``.

Same hyperparameters, defaults, parameter names and shapes as fla's layer, so state dicts load both ways. Only the
leading arguments follow the zoo's mixer contract: ``GatedLinearAttention(d_model, layer_idx=0, backend="auto",
expand_k=0.5, expand_v=1.0, num_heads=4, ...)`` (fla's ``hidden_size`` is ``d_model``).

    q, k, v = q_proj(x), k_proj(x), v_proj(x)          (each through a silu short conv when use_short_conv)
    g       = logsigmoid(gk_proj(x)) / gate_logit_normalizer     gk_proj: low-rank, d_model -> 16 -> key dim
    o       = gla(q, k, v, g)                           (ops.gla; heads of key width K = key_dim / num_heads)
    o       = rmsnorm(o) * weight * swish(g_proj(x))     per head (g_norm_swish_gate); no gate: g_norm alone
    out     = o_proj(o)

Decoding keeps the (num_heads, K, V) state per sequence, plus the last conv_size - 1 inputs of each short conv.
Packed rows (``seq_idx``): the state restarts at each document, and conv taps stop at a boundary.
Backends: "reference" (ops.gla's chunked reference), "fla" (fla's ``chunk_gla``; ``fused_recurrent_gla`` to
decode), "auto" (fla where a GPU and fla-core are there).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from ops._backend import resolve_peer_backend
from ops.causal_conv1d import causal_conv1d
from ops.causal_conv1d.reference import causal_conv1d_step
from ops.gla import gla
from ops.gla.reference import gla_step
from zoo.blocks.base import Cache, Mixer
from zoo.blocks.gated_norm import GATES, GatedRMSNorm
from zoo.blocks.registry import register_mixer
from zoo.checks import require_choice, require_positive_int, require_positive_number

FEATURE_MAPS = {None: None, "relu": F.relu, "swish": F.silu, "silu": F.silu, "sigmoid": torch.sigmoid}
MODES = ("chunk", "fused_recurrent", "fused_chunk")


@register_mixer("gla")
class GatedLinearAttention(Mixer):
    backends = ("auto", "reference", "fla")

    def __init__(self, d_model: int, layer_idx: int = 0, backend: str = "auto", mode: str = "chunk",
                 expand_k: float = 0.5, expand_v: float = 1.0, num_heads: int = 4, num_kv_heads: int | None = None,
                 feature_map: str | None = None, use_short_conv: bool = False, conv_size: int = 4,
                 conv_bias: bool = False, use_output_gate: bool = True, gate_fn: str = "swish",
                 elementwise_affine: bool = True, norm_eps: float = 1e-5, gate_logit_normalizer: float = 16,
                 gate_low_rank_dim: int = 16, clamp_min: float | None = None, fuse_norm: bool = True):
        """``mode`` is accepted for compatibility with fla (its kernel choice); ``backend`` picks the path."""
        super().__init__(d_model, layer_idx, backend)
        owner = type(self).__name__
        require_choice("mode", mode, MODES, owner)
        require_choice("feature_map", feature_map, tuple(FEATURE_MAPS), owner)
        require_choice("gate_fn", gate_fn, tuple(GATES), owner)
        for name, value in (("num_heads", num_heads), ("conv_size", conv_size),
                            ("gate_low_rank_dim", gate_low_rank_dim)):
            require_positive_int(name, value, owner)
        for name, value in (("expand_k", expand_k), ("expand_v", expand_v),
                            ("gate_logit_normalizer", gate_logit_normalizer), ("norm_eps", norm_eps)):
            require_positive_number(name, value, owner)
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        require_positive_int("num_kv_heads", num_kv_heads, owner)
        if num_heads % num_kv_heads:
            raise ValueError(f"{owner}: num_kv_heads={num_kv_heads} must divide num_heads={num_heads}")
        key_dim, value_dim = d_model * expand_k, d_model * expand_v
        for name, width in (("expand_k", key_dim), ("expand_v", value_dim)):
            if not math.isclose(width, round(width)) or round(width) % num_heads:
                raise ValueError(f"{owner}: d_model * {name} = {width} must be an integer divisible by "
                                 f"num_heads={num_heads}")
        self.mode, self.expand_k, self.expand_v = mode, expand_k, expand_v
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.num_kv_groups = num_heads // num_kv_heads
        self.key_dim, self.value_dim = round(key_dim), round(value_dim)
        self.key_dim_per_group = self.key_dim // self.num_kv_groups
        self.value_dim_per_group = self.value_dim // self.num_kv_groups
        self.head_k_dim, self.head_v_dim = self.key_dim // num_heads, self.value_dim // num_heads
        self.feature_map = feature_map
        self.use_short_conv, self.conv_size, self.conv_bias = use_short_conv, conv_size, conv_bias
        self.use_output_gate, self.gate_fn = use_output_gate, gate_fn
        self.gate_logit_normalizer, self.clamp_min = gate_logit_normalizer, clamp_min

        # created in fla's order, so the same seed draws the same weights
        self.q_proj = nn.Linear(d_model, self.key_dim, bias=False)
        self.k_proj = nn.Linear(d_model, self.key_dim_per_group, bias=False)
        self.v_proj = nn.Linear(d_model, self.value_dim_per_group, bias=False)
        if use_output_gate:
            self.g_proj = nn.Linear(d_model, self.value_dim, bias=False)
        if use_short_conv:  # fla's ShortConvolution is a depthwise nn.Conv1d with these parameters
            for name, width in self._conv_widths().items():
                setattr(self, f"{name}_conv1d", nn.Conv1d(width, width, conv_size, groups=width,
                                                          padding=conv_size - 1, bias=conv_bias))
        self.gk_proj = nn.Sequential(nn.Linear(d_model, gate_low_rank_dim, bias=False),
                                     nn.Linear(gate_low_rank_dim, self.key_dim_per_group, bias=True))
        self.o_proj = nn.Linear(self.value_dim, d_model, bias=False)
        norm = GatedRMSNorm(self.head_v_dim, eps=norm_eps, norm_before_gate=True,
                            elementwise_affine=elementwise_affine, gate=gate_fn)
        self.fuse_norm_and_gate = gate_fn == "swish" and fuse_norm and use_output_gate
        if self.fuse_norm_and_gate:  # the parameter's name is all that differs (fla fuses the gate into the norm)
            self.g_norm_swish_gate = norm
        else:
            self.g_norm = norm

    def _conv_widths(self) -> dict:
        return {"q": self.key_dim, "k": self.key_dim_per_group, "v": self.value_dim_per_group}

    def _backend(self, device) -> str:
        return resolve_peer_backend(self.backend, device, "GatedLinearAttention", peer="fla", package="fla",
                                    install="pip install zoo[fla]")

    # ---- forward ---------------------------------------------------------------------------------------------
    def _short_convs(self, x, projections, cache, seq_idx):
        """silu(causal depthwise conv) of each of q, k, v; with a cache, continue from and update its windows."""
        out = []
        for name, projected in zip(("q", "k", "v"), projections):
            conv = getattr(self, f"{name}_conv1d")
            weight, xt = conv.weight[:, 0, :], projected.transpose(1, 2)
            if cache is None:
                y = causal_conv1d(xt, weight, conv.bias, seq_idx=seq_idx, activation="silu", backend="auto")
            elif x.shape[1] == 1:
                y = causal_conv1d_step(cache[f"conv_{name}"], xt[..., 0], weight, conv.bias, activation="silu")[..., None]
            else:
                y, window = causal_conv1d(xt, weight, conv.bias, initial_states=cache[f"conv_{name}"],
                                          return_final_states=True, activation="silu", backend="auto")
                cache[f"conv_{name}"].copy_(window)
            out.append(y.transpose(1, 2))
        return out

    def _heads(self, t: torch.Tensor, width: int) -> torch.Tensor:
        """(B, T, kv heads * width) -> (B, T, num_heads, width): each kv head serves num_kv_groups query heads."""
        t = t.unflatten(-1, (-1, width))
        return t.repeat_interleave(self.num_kv_groups, dim=-2) if self.num_kv_groups > 1 else t

    def forward(self, x: torch.Tensor, cache: Cache | None = None, seq_idx: torch.Tensor | None = None) -> torch.Tensor:
        self.check_packing(x, cache, seq_idx)
        batch, length, _ = x.shape
        if length == 0:  # an empty prefill changes nothing
            return x.new_zeros(x.shape)
        chosen = self._backend(x.device)
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.use_short_conv:
            q, k, v = self._short_convs(x, (q, k, v), cache, seq_idx)
        gk = F.logsigmoid(self.gk_proj(x)) / self.gate_logit_normalizer
        if self.clamp_min is not None:
            gk = gk.clamp_min(self.clamp_min)
        q = q.unflatten(-1, (self.num_heads, self.head_k_dim))
        k, gk = self._heads(k, self.head_k_dim), self._heads(gk, self.head_k_dim)
        v = self._heads(v, self.head_v_dim)
        if self.feature_map is not None:
            q, k = FEATURE_MAPS[self.feature_map](q), FEATURE_MAPS[self.feature_map](k)

        if cache is None:
            o, _ = gla(q, k, v, gk, seq_idx=seq_idx, backend=self.op_backend(chosen))
        elif length == 1 and chosen == "reference":
            o = gla_step(cache["state"], q[:, 0], k[:, 0], v[:, 0], gk[:, 0])[:, None]
        else:
            continuing = cache["state"] if cache.seen > 0 else None
            if length == 1:  # fla decodes with its fused recurrent kernel, as its layer does
                from ops.gla.fla import gla_fla
                o, state = gla_fla(q, k, v, gk, initial_state=continuing, output_final_state=True, recurrent=True)
            else:
                o, state = gla(q, k, v, gk, initial_state=continuing, output_final_state=True,
                                   backend=self.op_backend(chosen))
            cache["state"].copy_(state)
        if cache is not None:
            cache.seen += length

        if self.use_output_gate:
            norm = self.g_norm_swish_gate if self.fuse_norm_and_gate else self.g_norm
            o = norm(o, self.g_proj(x).unflatten(-1, (self.num_heads, self.head_v_dim)))
        else:
            o = self.g_norm(o)
        return self.o_proj(o.flatten(-2))

    # ---- decoding state --------------------------------------------------------------------------------------
    def allocate_cache(self, batch_size: int, device=None, dtype=None) -> Cache:
        """state: (num_heads, K, V) per sequence, float32 (or wider); conv_q/k/v: the short convs' windows."""
        weight = self.q_proj.weight
        device = device or weight.device
        dtype = dtype or weight.dtype
        cache = Cache(state=torch.zeros(batch_size, self.num_heads, self.head_k_dim, self.head_v_dim, device=device,
                                        dtype=torch.promote_types(dtype, torch.float32)))
        if self.use_short_conv:
            for name, width in self._conv_widths().items():
                cache[f"conv_{name}"] = torch.zeros(batch_size, width, self.conv_size - 1, device=device, dtype=dtype)
        return cache

    def state_size(self, seq_len: int) -> int:
        conv = sum(self._conv_widths().values()) * (self.conv_size - 1) if self.use_short_conv else 0
        return self.num_heads * self.head_k_dim * self.head_v_dim + conv

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, num_heads={self.num_heads}, head_k_dim={self.head_k_dim}, "
                f"head_v_dim={self.head_v_dim}, use_short_conv={self.use_short_conv}, backend={self.backend!r}")
