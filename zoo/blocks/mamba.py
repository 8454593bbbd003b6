"""Mamba (Mamba-1 selective SSM block), compatible with ``mamba_ssm.modules.mamba_simple.Mamba``.

Same hyperparameters, defaults, parameter names, shapes and initialisation as mamba-ssm, so a state dict saved
by either loads into the other and gives the same outputs. Only the leading arguments follow the zoo's mixer
contract: ``Mamba(d_model, layer_idx=0, backend="auto", d_state=16, ...)``.

    x, z  = in_proj(h).chunk(2)                  (batch, d_inner, L) each
    x     = silu(causal_conv1d(x))               depthwise, width d_conv
    dt, B, C = x_proj(x).split(dt_rank, N, N)
    y     = selective_scan(x, dt_proj.weight @ dt, A=-exp(A_log), B, C, D, z, delta_bias=dt_proj.bias, softplus)
    out   = out_proj(y)

Decoding keeps the last d_conv - 1 conv inputs and the (d_inner, d_state) SSM state: a fixed-size state.

Packed rows (``seq_idx``): the conv's taps stop at a document boundary and the scan's state restarts at each
document, on every backend (``ops.selective_scan``: the reference and our Triton and CPU kernels zero the decay into
a document's first step, in place; only mamba-ssm's CUDA scan, which has no ``seq_idx``, runs each document as its
own row).

``init="mimetic"`` (off by default; ``model=mamba_mimetic`` / ``conv_mamba_mimetic``): the structured
initialisation of Trockman et al. 2024, "Mimetic initialization helps state space models learn to recall"
(arXiv 2410.11135). What was verified from the paper's text available to this project (its abstract and
introduction): the poor copying and recall of Mamba is attributed partly to training difficulty, and the
proposal is "a structured initialization technique that allows state space layers to more readily mimic
self-attention", which "makes it substantially easier for Mamba to learn to copy and do associative recall
from scratch". The paper's method section could not be read here, so the two ingredients implemented are the
ones named for the zoo's issue 16, read through Mamba's "attention" view
y_t = sum_s C_t . (prod_{s<r<=t} exp(delta_r A)) B_s delta_s x_s:

1. no decay at initialisation: A = -exp(A_log) is set to -0.01 for every channel and state (instead of S4D-real's
   -(n+1)), so exp(delta A) >= 0.999 per step at every initial delta (<= dt_max = 0.1): the product over r is
   ~1 and old tokens are not forgotten before training starts;
2. B and C made to correlate: x_proj's C rows are a copy of its B rows (W_C = W_B), so C_t . B_s =
   x_t^T W_B^T W_B x_s is largest where x_s resembles x_t, like attention with tied queries and keys (the
   mimetic initialisation of self-attention, Trockman & Kolter 2023, sets W_Q W_K^T ~ I).

Everything else (dt, conv, projections) keeps mamba-ssm's initialisation; the random draws are the same as the
default's, so init="default" is bit-for-bit mamba-ssm's.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from ops._backend import resolve_backend
from ops.causal_conv1d import causal_conv1d
from ops.causal_conv1d.reference import causal_conv1d_step
from ops.selective_scan import selective_scan
from ops.selective_scan.reference import selective_scan_step
from zoo.blocks.base import Cache, Mixer
from zoo.blocks.registry import register_mixer
from zoo.checks import require_choice, require_positive_int, require_positive_number


INITS = ("default", "mimetic")
MIMETIC_DECAY_RATE = 0.01  # -A at a mimetic initialisation: exp(-0.01 * delta) >= 0.999 for delta <= 0.1


def _check_hyperparameters(d_model, d_state, d_conv, expand, dt_rank, dt_min, dt_max, dt_init, dt_scale,
                           dt_init_floor, init):
    """Each bad constructor argument in one line naming it and what is allowed."""
    owner = "Mamba"
    require_choice("init", init, INITS, owner)
    require_positive_int("d_state", d_state, owner)
    require_positive_int("d_conv", d_conv, owner)
    require_positive_number("expand", expand, owner)
    if dt_rank != "auto":
        require_positive_int("dt_rank ('auto' or an int)", dt_rank, owner)
    require_choice("dt_init", dt_init, ("random", "constant"), owner)
    for name, value in (("dt_min", dt_min), ("dt_max", dt_max), ("dt_scale", dt_scale)):
        require_positive_number(name, value, owner)
    if dt_min > dt_max:
        raise ValueError(f"{owner}: dt_min={dt_min!r} must not exceed dt_max={dt_max!r}")
    if isinstance(dt_init_floor, bool) or not isinstance(dt_init_floor, (int, float)) or dt_init_floor < 0:
        raise ValueError(f"{owner}: dt_init_floor must be a number >= 0, got {dt_init_floor!r}")
    if int(expand * d_model) < 1:
        raise ValueError(f"{owner}: expand={expand!r} gives d_inner={int(expand * d_model)}; it must be at least 1")


@register_mixer("mamba")
class Mamba(Mixer):
    backends = ("auto", "reference", "triton", "cuda")

    def __init__(self, d_model: int, layer_idx: int = 0, backend: str = "auto", d_state: int = 16, d_conv: int = 4,
                 expand: float = 2, dt_rank="auto", dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init: str = "random", dt_scale: float = 1.0, dt_init_floor: float = 1e-4,
                 conv_bias: bool = True, bias: bool = False, use_fast_path: bool = True, device=None, dtype=None,
                 init: str = "default"):
        """``use_fast_path`` is accepted for signature compatibility with mamba-ssm; ``backend`` picks the path.
        ``init``: "default" (mamba-ssm's) or "mimetic" (see the module docstring)."""
        super().__init__(d_model, layer_idx, backend)
        _check_hyperparameters(d_model, d_state, d_conv, expand, dt_rank, dt_min, dt_max, dt_init, dt_scale,
                               dt_init_floor, init)
        self.init = init
        factory = {"device": device, "dtype": dtype}
        self.d_state, self.d_conv, self.expand = d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        self.use_fast_path = use_fast_path

        # created in mamba-ssm's order, so the same seed draws the same weights
        self.in_proj = nn.Linear(d_model, self.d_inner * 2, bias=bias, **factory)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1,
                                bias=conv_bias, **factory)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)

        self._init_dt_proj(dt_init, dt_scale, dt_min, dt_max, dt_init_floor, factory)

        # S4D-real initialisation: A[d, n] = -(n + 1), stored as its log
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)
        if init == "mimetic":
            self._mimetic_init()

    def _init_dt_proj(self, dt_init, dt_scale, dt_min, dt_max, dt_init_floor, factory):
        """dt_proj keeps delta at its initial scale; its bias is softplus^-1 of a log-uniform dt in [dt_min, dt_max]
        (drawn in mamba-ssm's order, so the same seed gives the same weights)."""
        dt_init_std = self.dt_rank ** -0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, dt_init_std)
        else:
            nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        dt = torch.exp(torch.rand(self.d_inner, **factory) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        inv_dt = dt + torch.log(-torch.expm1(-dt))
        with torch.no_grad():
            self.dt_proj.bias.copy_(inv_dt)
        self.dt_proj.bias._no_reinit = True
        self.dt_proj.bias._no_weight_decay = True

    @torch.no_grad()
    def _mimetic_init(self):
        """No decay at initialisation and W_C = W_B (see the module docstring for the source and the reasons)."""
        self.A_log.fill_(math.log(MIMETIC_DECAY_RATE))
        b_rows = slice(self.dt_rank, self.dt_rank + self.d_state)
        c_rows = slice(self.dt_rank + self.d_state, self.dt_rank + 2 * self.d_state)
        self.x_proj.weight[c_rows] = self.x_proj.weight[b_rows]

    # ---- backends --------------------------------------------------------------------------------------------
    def _scan_backend(self, device, continuing: bool) -> str:
        which = resolve_backend(self.backend, device, "Mamba selective_scan", cuda_package="mamba_ssm")
        if which == "cuda" and continuing:
            return "triton"  # mamba_ssm's selective_scan_fn takes no initial state
        return self.backend  # validated above; "auto" stays "auto" so the op picks its CPU kernel too

    def _conv_backend(self) -> str:
        return self.backend if self.backend in ("cuda", "auto") else "reference"

    # ---- forward ---------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, cache: Cache | None = None, seq_idx: torch.Tensor | None = None) -> torch.Tensor:
        self.check_packing(x, cache, seq_idx)
        if x.shape[1] == 0:  # an empty prefill changes nothing
            return x.new_zeros(x.shape)
        if cache is not None and x.shape[1] == 1:
            return self._step(x, cache)
        continuing = cache is not None and cache.seen > 0
        u, z = self.in_proj(x).transpose(1, 2).chunk(2, dim=1)             # (batch, d_inner, L) each
        conv_weight = self.conv1d.weight[:, 0, :]
        conv_args = dict(activation="silu", backend=self._conv_backend())
        if cache is None:
            u = causal_conv1d(u, conv_weight, self.conv1d.bias, seq_idx=seq_idx, **conv_args)
        else:
            u, conv_state = causal_conv1d(u, conv_weight, self.conv1d.bias, initial_states=cache["conv"],
                                          return_final_states=True, **conv_args)
            cache["conv"].copy_(conv_state)
        dt, B, C = self.x_proj(u.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight).transpose(1, 2)             # (batch, d_inner, L); bias in the scan
        y = selective_scan(
            u, dt, -torch.exp(self.A_log.float()), B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(),
            self.D.float(), z=z, delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
            return_last_state=cache is not None, initial_state=cache["ssm"] if continuing else None,
            backend=self._scan_backend(x.device, continuing), seq_idx=seq_idx,
        )
        if cache is not None:
            y, last_state = y
            cache["ssm"].copy_(last_state)
            cache.seen += x.shape[1]
        return self.out_proj(y.transpose(1, 2))

    def _step(self, x: torch.Tensor, cache: Cache) -> torch.Tensor:
        """One token, O(1) in the sequence length: shift the conv window, one recurrence step."""
        u, z = self.in_proj(x[:, 0]).chunk(2, dim=-1)                      # (batch, d_inner) each
        u = causal_conv1d_step(cache["conv"], u, self.conv1d.weight[:, 0, :], self.conv1d.bias, activation="silu")
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        y = selective_scan_step(cache["ssm"], u, F.linear(dt, self.dt_proj.weight), -torch.exp(self.A_log.float()),
                                B, C, self.D.float(), z=z, delta_bias=self.dt_proj.bias.float(), delta_softplus=True)
        cache.seen += 1
        return self.out_proj(y)[:, None]

    # ---- decoding state --------------------------------------------------------------------------------------
    def allocate_cache(self, batch_size: int, device=None, dtype=None) -> Cache:
        """conv: the last d_conv - 1 conv inputs (model dtype); ssm: the scan state, always float32."""
        weight = self.in_proj.weight
        device = device or weight.device
        return Cache(
            conv=torch.zeros(batch_size, self.d_inner, self.d_conv - 1, device=device, dtype=dtype or weight.dtype),
            ssm=torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=torch.float32),
        )

    def state_size(self, seq_len: int) -> int:
        return self.d_inner * (self.d_state + self.d_conv - 1)
