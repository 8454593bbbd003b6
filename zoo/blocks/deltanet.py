"""DeltaNet (Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule over Sequence Length") and
Gated DeltaNet (Yang et al. 2025, "Gated Delta Networks: Improving Mamba2 with Delta Rule"), compatible with fla's
``fla.layers.DeltaNet`` and ``fla.layers.GatedDeltaNet``.

Same hyperparameters, defaults and parameter names as fla's layers (q_proj, k_proj, v_proj, b_proj, a_proj,
A_log, dt_bias, q_conv1d, k_conv1d, v_conv1d, g_proj, o_norm, o_proj), so a state dict saved by either loads into
the other and gives the same outputs. Only the leading arguments follow the zoo's mixer contract:
``DeltaNet(d_model, layer_idx=0, backend="auto", ...)``; fla's ``hidden_size`` is ``d_model``.

    q, k, v = silu(short_conv(q_proj(x))), ...      (depthwise causal convs of width conv_size)
    q, k    = l2_normalize(q), l2_normalize(k)       per head
    beta    = sigmoid(b_proj(x))                     (x 2 with allow_neg_eigval: beta in (0, 2))
    g       = -exp(A_log) * softplus(a_proj(x) + dt_bias)          (Gated DeltaNet only: the log decay)
    o       = ops.gated_delta_rule(q, k, v, g, beta) / ops.delta_rule(q, k, v, beta)
    y       = o_proj(rmsnorm(o) * weight * silu(g_proj(x)))        (the gated RMSNorm, per head)

Decoding keeps the (heads, K, V) delta-rule state (float32) and the last conv_size - 1 inputs of the three short
convolutions. Packed rows (``seq_idx``): the conv taps stop at a document boundary and the state restarts at each
document, on every backend. ``backend``: "auto" (fla's kernels on CUDA when fla is installed, else the reference),
"reference", "fla".
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from ops._backend import resolve_peer_backend
from ops.causal_conv1d import causal_conv1d
from ops.causal_conv1d.reference import causal_conv1d_step
from ops.delta_rule import delta_rule
from ops.gated_delta_rule import gated_delta_rule
from ops.gated_delta_rule.inputs import FLA_INSTALL
from ops.gated_delta_rule.reference import gated_delta_rule_step, l2_normalize
from zoo.blocks.base import Cache, Mixer
from zoo.blocks.registry import register_mixer
from zoo.checks import require_choice, require_positive_int, require_positive_number


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """float32 for 16- and 32-bit tensors, float64 stays float64 (gates, norms and beta are computed so)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _whole(name: str, value: float, owner: str) -> int:
    """fla's sizes are products like hidden_size * expand_k: they must come out whole."""
    if not math.isclose(value, round(value)) or round(value) < 1:
        raise ValueError(f"{owner}: {name} = {value!r} must be a positive integer")
    return round(value)


class HeadRMSNorm(nn.Module):
    """RMSNorm over each head's values, optionally gated: fla's ``RMSNorm`` / ``FusedRMSNormGated`` (a ``weight``,
    no bias). y = x / sqrt(mean(x^2) + eps) * weight [* act(gate)], act = silu ("swish") or sigmoid."""

    def __init__(self, hidden_size: int, eps: float, gate_activation: str | None = None, dtype=None):
        super().__init__()
        self.eps, self.gate_activation = eps, gate_activation
        self.weight = nn.Parameter(torch.ones(hidden_size, dtype=dtype))

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        x32 = _at_least_float32(x)
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.to(x32.dtype)
        if gate is not None:
            gate = _at_least_float32(gate)
            y = y * (torch.sigmoid(gate) if self.gate_activation == "sigmoid" else F.silu(gate))
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, gate_activation={self.gate_activation}"


class _DeltaRuleLayer(Mixer):
    """What DeltaNet and Gated DeltaNet share: q/k/v projections and short convs, the decoding cache, the output
    norm and projection. Subclasses set the sizes, build the rest and supply beta and the decay."""

    backends = ("auto", "reference", "fla")
    qk_conv_silu = True  # whether q and k convs end in silu (DeltaNet: only with qk_activation="silu")

    def _build_qkv(self, d_model: int):
        self.q_proj = nn.Linear(d_model, self.key_dim, bias=False)
        self.k_proj = nn.Linear(d_model, self.key_dim, bias=False)
        self.v_proj = nn.Linear(d_model, self.value_dim, bias=False)

    def _build_convs(self, conv_size: int, conv_bias: bool, use_short_conv: bool):
        self.use_short_conv, self.conv_size, self.conv_bias = use_short_conv, conv_size, conv_bias
        if use_short_conv:  # fla's ShortConvolution is an nn.Conv1d: same parameter names and shapes
            for name, width in (("q_conv1d", self.key_dim), ("k_conv1d", self.key_dim), ("v_conv1d", self.value_dim)):
                setattr(self, name, nn.Conv1d(width, width, conv_size, groups=width, padding=conv_size - 1,
                                              bias=conv_bias))

    def _build_output(self, d_model: int, use_gate: bool, norm_eps: float, gate_activation: str):
        self.use_gate = use_gate
        if use_gate:
            self.g_proj = nn.Linear(d_model, self.value_dim, bias=False)
            self.o_norm = HeadRMSNorm(self.head_v_dim, norm_eps, gate_activation)
        else:
            self.o_norm = HeadRMSNorm(self.head_v_dim, norm_eps, dtype=torch.float32)
        self.o_proj = nn.Linear(self.value_dim, d_model, bias=False)

    # ---- the pieces subclasses supply -------------------------------------------------------------------------
    def _beta_and_decay(self, x: torch.Tensor):
        """(beta (B, T, HV), g (B, T, HV) or None), float32 (float64 for a float64 model)."""
        raise NotImplementedError

    def _normalize_qk(self, q: torch.Tensor, k: torch.Tensor):
        return l2_normalize(q), l2_normalize(k)

    # ---- forward ----------------------------------------------------------------------------------------------
    def _conv_weight(self):
        convs = (self.q_conv1d, self.k_conv1d, self.v_conv1d)
        bias = torch.cat([c.bias for c in convs]) if self.conv_bias else None
        return torch.cat([c.weight[:, 0, :] for c in convs]), bias

    def _qkv(self, x: torch.Tensor, cache: Cache | None, seq_idx):
        """q, k (B, T, H, K) and v (B, T, HV, V) after the short convs and activations, as fla's layers make them."""
        # one product over the three weights side by side (each keeps fla's name): fewer, larger matmuls
        qkv = F.linear(x, torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]))
        silu_all = self.qk_conv_silu
        if not self.use_short_conv:
            mixed = F.silu(qkv) if silu_all else qkv
        else:
            weight, bias = self._conv_weight()
            activation = "silu" if silu_all else None
            if cache is not None and x.shape[1] == 1:
                mixed = causal_conv1d_step(cache["conv"], qkv[:, 0], weight, bias, activation)[:, None]
            elif cache is not None:
                mixed, state = causal_conv1d(qkv.transpose(1, 2), weight, bias, initial_states=cache["conv"],
                                             return_final_states=True, activation=activation)
                cache["conv"].copy_(state)
                mixed = mixed.transpose(1, 2)
            else:
                mixed = causal_conv1d(qkv.transpose(1, 2), weight, bias, seq_idx=seq_idx,
                                      activation=activation).transpose(1, 2)
        q, k, v = mixed.split([self.key_dim, self.key_dim, self.value_dim], dim=-1)
        if not silu_all:  # the value path always ends in silu
            v = F.silu(v)
        B, T = x.shape[:2]
        return (q.reshape(B, T, -1, self.head_k_dim), k.reshape(B, T, -1, self.head_k_dim),
                v.reshape(B, T, -1, self.head_v_dim))

    def _backend(self, device) -> str:
        return resolve_peer_backend(self.backend, device, type(self).__name__, "fla", "fla", FLA_INSTALL)

    def forward(self, x: torch.Tensor, cache: Cache | None = None, seq_idx: torch.Tensor | None = None) -> torch.Tensor:
        self.check_packing(x, cache, seq_idx)
        B, T, _ = x.shape
        if T == 0:  # an empty prefill changes nothing
            return x.new_zeros(x.shape)
        q, k, v = self._qkv(x, cache, seq_idx)
        q, k = self._normalize_qk(q, k)
        groups = v.shape[2] // q.shape[2]
        if groups > 1:  # grouped value heads: each q/k head serves `groups` consecutive value heads (fla's GVA)
            q, k = q.repeat_interleave(groups, dim=2), k.repeat_interleave(groups, dim=2)
        beta, g = self._beta_and_decay(x)
        backend = self._backend(x.device)
        if cache is not None and T == 1 and backend == "reference":
            o = gated_delta_rule_step(q[:, 0], k[:, 0], v[:, 0], None if g is None else g[:, 0], beta[:, 0],
                                      cache["recurrent"]).to(x.dtype)[:, None]
        else:
            state = cache["recurrent"] if cache is not None else None
            if g is None:
                o, final = delta_rule(q, k, v, beta, initial_state=state, output_final_state=cache is not None,
                                      seq_idx=seq_idx, backend=self.op_backend(backend))
            else:
                o, final = gated_delta_rule(q, k, v, g, beta, initial_state=state, output_final_state=cache is not None,
                                            seq_idx=seq_idx, backend=self.op_backend(backend))
            if cache is not None:
                cache["recurrent"].copy_(final)
        if cache is not None:
            cache.seen += T
        gate = self.g_proj(x).reshape(B, T, -1, self.head_v_dim) if self.use_gate else None
        return self.o_proj(self.o_norm(o, gate).reshape(B, T, self.value_dim))

    # ---- decoding state ---------------------------------------------------------------------------------------
    def _conv_channels(self) -> int:
        return (2 * self.key_dim + self.value_dim) if self.use_short_conv else 0

    def allocate_cache(self, batch_size: int, device=None, dtype=None) -> Cache:
        """recurrent: the delta-rule state (float32 at least); conv: the three short convs' last inputs."""
        weight = self.q_proj.weight
        device = weight.device if device is None else device
        dtype = dtype or weight.dtype
        heads = self.value_dim // self.head_v_dim
        cache = Cache(recurrent=torch.zeros(batch_size, heads, self.head_k_dim, self.head_v_dim, device=device,
                                            dtype=torch.promote_types(dtype, torch.float32)))
        if self.use_short_conv:
            cache["conv"] = torch.zeros(batch_size, self._conv_channels(), self.conv_size - 1, device=device,
                                        dtype=dtype)
        return cache

    def state_size(self, seq_len: int) -> int:
        """H_v * K * V (the delta-rule state) + (2 * key_dim + value_dim) * (conv_size - 1) (the short convs)."""
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 0:
            raise ValueError(f"{type(self).__name__}: seq_len must be a non-negative integer, got {seq_len!r}")
        heads = self.value_dim // self.head_v_dim
        return heads * self.head_k_dim * self.head_v_dim + self._conv_channels() * (self.conv_size - 1)


@register_mixer("deltanet")
class DeltaNet(_DeltaRuleLayer):
    """fla's ``DeltaNet`` layer: key_dim = d_model * expand_k and value_dim = d_model * expand_v split over
    ``num_heads``; ``use_beta`` (else beta = 1), ``use_gate`` (gated output norm), ``qk_activation`` (silu | relu |
    elu | identity; elu means elu + 1) and ``qk_norm`` (l2 | sum) as in fla."""

    QK_ACTIVATIONS = ("silu", "relu", "elu", "identity")

    def __init__(self, d_model: int, layer_idx: int = 0, backend: str = "auto", expand_k: float = 1.0,
                 expand_v: float = 1.0, num_heads: int = 4, use_beta: bool = True, use_gate: bool = False,
                 use_short_conv: bool = True, conv_size: int = 4, conv_bias: bool = False,
                 allow_neg_eigval: bool = False, qk_activation: str = "silu", qk_norm: str = "l2",
                 norm_eps: float = 1e-5):
        super().__init__(d_model, layer_idx, backend)
        owner = "DeltaNet"
        require_positive_int("num_heads", num_heads, owner)
        require_positive_int("conv_size", conv_size, owner)
        require_positive_number("expand_k", expand_k, owner)
        require_positive_number("expand_v", expand_v, owner)
        require_positive_number("norm_eps", norm_eps, owner)
        require_choice("qk_activation", qk_activation, self.QK_ACTIVATIONS, owner)
        require_choice("qk_norm", qk_norm, ("l2", "sum"), owner)
        self.key_dim = _whole("d_model * expand_k", d_model * expand_k, owner)
        self.value_dim = _whole("d_model * expand_v", d_model * expand_v, owner)
        for name, dim in (("key dim (d_model * expand_k)", self.key_dim), ("value dim", self.value_dim)):
            if dim % num_heads:
                raise ValueError(f"{owner}: num_heads={num_heads} must divide the {name} = {dim}")
        self.expand_k, self.expand_v, self.num_heads = expand_k, expand_v, num_heads
        self.head_k_dim, self.head_v_dim = self.key_dim // num_heads, self.value_dim // num_heads
        self.use_beta, self.allow_neg_eigval = use_beta, allow_neg_eigval
        self.qk_activation, self.qk_norm = qk_activation, qk_norm
        self.qk_conv_silu = qk_activation == "silu"
        # created in fla's order, so the same seed draws the same weights
        self._build_qkv(d_model)
        if use_beta:
            self.b_proj = nn.Linear(d_model, num_heads, bias=False)
        self._build_convs(conv_size, conv_bias, use_short_conv)
        self._build_output(d_model, use_gate, norm_eps, "swish")

    def _normalize_qk(self, q, k):
        if self.qk_activation == "relu":
            q, k = q.relu(), k.relu()
        elif self.qk_activation == "elu":
            q, k = F.elu(q) + 1, F.elu(k) + 1
        if self.qk_norm == "sum":
            return (q / q.abs().sum(-1, keepdim=True).clamp_min(1e-6), k / k.abs().sum(-1, keepdim=True).clamp_min(1e-6))
        return l2_normalize(q), l2_normalize(k)

    def _beta_and_decay(self, x):
        if self.use_beta:
            beta = torch.sigmoid(_at_least_float32(self.b_proj(x)))
        else:
            beta = _at_least_float32(x.new_ones(*x.shape[:2], self.num_heads))
        return (2 * beta if self.allow_neg_eigval else beta), None

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, num_heads={self.num_heads}, head_k_dim={self.head_k_dim}, "
                f"head_v_dim={self.head_v_dim}, backend={self.backend!r}")


@register_mixer("gated_deltanet")
class GatedDeltaNet(_DeltaRuleLayer):
    """fla's ``GatedDeltaNet`` layer: ``num_heads`` q/k heads of ``head_dim``, ``num_v_heads`` (default num_heads)
    value heads of head_dim * expand_v; the decay g = -exp(A_log) * softplus(a_proj(x) + dt_bias) per value head,
    with A ~ U(0, 16) and dt_bias = softplus^-1 of a log-uniform dt in [0.001, 0.1] at initialisation (fla's)."""

    GATE_ACTIVATIONS = ("swish", "silu", "sigmoid")

    def __init__(self, d_model: int, layer_idx: int = 0, backend: str = "auto", expand_v: float = 2,
                 head_dim: int = 256, num_heads: int = 6, num_v_heads: int | None = None, use_gate: bool = True,
                 use_short_conv: bool = True, allow_neg_eigval: bool = False, conv_size: int = 4,
                 conv_bias: bool = False, norm_eps: float = 1e-5, output_gate_activation: str = "swish"):
        super().__init__(d_model, layer_idx, backend)
        owner = "GatedDeltaNet"
        require_positive_int("head_dim", head_dim, owner)
        require_positive_int("num_heads", num_heads, owner)
        require_positive_int("conv_size", conv_size, owner)
        num_v_heads = num_heads if num_v_heads is None else num_v_heads
        require_positive_int("num_v_heads", num_v_heads, owner)
        if num_v_heads % num_heads:
            raise ValueError(f"{owner}: num_v_heads={num_v_heads} must be a multiple of num_heads={num_heads}")
        require_positive_number("expand_v", expand_v, owner)
        require_positive_number("norm_eps", norm_eps, owner)
        require_choice("output_gate_activation", output_gate_activation, self.GATE_ACTIVATIONS, owner)
        self.expand_v, self.head_dim, self.num_heads, self.num_v_heads = expand_v, head_dim, num_heads, num_v_heads
        self.head_k_dim = head_dim
        self.head_v_dim = _whole("head_dim * expand_v", head_dim * expand_v, owner)
        self.key_dim, self.value_dim = num_heads * head_dim, num_v_heads * self.head_v_dim
        self.allow_neg_eigval = allow_neg_eigval
        # created in fla's order, so the same seed draws the same weights
        self._build_qkv(d_model)
        self.a_proj = nn.Linear(d_model, num_v_heads, bias=False)
        self.b_proj = nn.Linear(d_model, num_v_heads, bias=False)
        A = torch.empty(num_v_heads, dtype=torch.float32).uniform_(0, 16)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        dt_min, dt_max, dt_init_floor = 0.001, 0.1, 1e-4
        dt = torch.exp(torch.rand(num_v_heads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.dt_bias._no_weight_decay = True
        self._build_convs(conv_size, conv_bias, use_short_conv)
        self._build_output(d_model, use_gate, norm_eps, output_gate_activation)

    def _beta_and_decay(self, x):
        beta = torch.sigmoid(_at_least_float32(self.b_proj(x)))
        a = _at_least_float32(self.a_proj(x))
        g = -self.A_log.to(a.dtype).exp() * F.softplus(a + self.dt_bias.to(a.dtype))
        return (2 * beta if self.allow_neg_eigval else beta), g

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, num_heads={self.num_heads}, num_v_heads={self.num_v_heads}, "
                f"head_dim={self.head_dim}, head_v_dim={self.head_v_dim}, backend={self.backend!r}")
