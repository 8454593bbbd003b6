"""Mamba-2 (Dao & Gu 2024, "Transformers are SSMs"), compatible with ``mamba_ssm.modules.mamba2.Mamba2``.

Same hyperparameters, defaults, parameter names, shapes and initialisation as mamba-ssm, so a state dict saved by
either loads into the other and gives the same outputs. Only the leading arguments follow the zoo's mixer
contract: ``Mamba2(d_model, layer_idx=0, backend="auto", d_state=128, ...)``.

    z, xBC, dt = in_proj(u).split(d_ssm, d_ssm + 2 * ngroups * d_state, nheads)   (plus a gated-MLP part when
                                                                                   d_ssm < d_inner)
    x, B, C    = silu(causal_conv1d(xBC)).split(d_ssm, ngroups * d_state, ngroups * d_state)
    y          = ssd(x, dt, A=-exp(A_log), B, C, D, dt_bias, dt_softplus=True, dt_limit)   (ops.ssd)
    y          = rmsnorm(y * silu(z)) * norm.weight       (per group; rmsnorm=False: ssd gates by silu(z) instead)
    out        = out_proj(y)

Decoding keeps the last d_conv - 1 conv inputs of xBC and the (nheads, headdim, d_state) SSM state.
Packed rows (``seq_idx``): the conv's taps stop at a document boundary and the state restarts at each document.
Backends: "reference" (ops.ssd's chunked reference), "cuda" (mamba-ssm's ``mamba_chunk_scan_combined`` and
``selective_state_update``, causal-conv1d), "auto" (cuda where a GPU and mamba-ssm are there; elsewhere the ops'
"auto", which on CPU is their compiled kernels where those build).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from ops._backend import package_importable, resolve_peer_backend
from ops.causal_conv1d import causal_conv1d
from ops.causal_conv1d.reference import causal_conv1d_step
from ops.ssd import ssd
from ops.ssd.reference import ssd_step
from zoo.blocks.base import Cache, Mixer
from zoo.blocks.gated_norm import GatedRMSNorm
from zoo.blocks.registry import register_mixer
from zoo.checks import require_positive_int, require_positive_number

# the reference's chunk (its cost grows with the chunk; the result does not depend on it): mamba-ssm's default
# chunk_size of 256 is a GPU kernel's tile and stays the "cuda" path's
REFERENCE_CHUNK = 64


@register_mixer("mamba2")
class Mamba2(Mixer):
    backends = ("auto", "reference", "cuda")

    def __init__(self, d_model: int, layer_idx: int = 0, backend: str = "auto", d_state: int = 128, d_conv: int = 4,
                 conv_init: float | None = None, expand: int = 2, headdim: int = 64, d_ssm: int | None = None,
                 ngroups: int = 1, A_init_range: tuple = (1, 16), D_has_hdim: bool = False, rmsnorm: bool = True,
                 norm_before_gate: bool = False, dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, dt_limit: tuple = (0.0, math.inf), bias: bool = False,
                 conv_bias: bool = True, chunk_size: int = 256, use_mem_eff_path: bool = True, device=None,
                 dtype=None):
        """``use_mem_eff_path`` is accepted for signature compatibility with mamba-ssm; ``backend`` picks the path."""
        super().__init__(d_model, layer_idx, backend)
        owner = "Mamba2"
        for name, value in (("d_state", d_state), ("d_conv", d_conv), ("headdim", headdim), ("ngroups", ngroups),
                            ("chunk_size", chunk_size)):
            require_positive_int(name, value, owner)
        require_positive_number("expand", expand, owner)
        for name, value in (("dt_min", dt_min), ("dt_max", dt_max)):
            require_positive_number(name, value, owner)
        if dt_min > dt_max:
            raise ValueError(f"{owner}: dt_min={dt_min!r} must not exceed dt_max={dt_max!r}")
        if len(tuple(A_init_range)) != 2 or not 0 < A_init_range[0] <= A_init_range[1]:
            raise ValueError(f"{owner}: A_init_range must be (low, high) with 0 < low <= high, got {A_init_range!r}")
        if len(tuple(dt_limit)) != 2 or not 0 <= dt_limit[0] <= dt_limit[1]:
            raise ValueError(f"{owner}: dt_limit must be (low, high) with 0 <= low <= high, got {dt_limit!r}")
        d_inner = expand * d_model
        if d_inner != int(d_inner):
            raise ValueError(f"{owner}: expand={expand!r} times d_model={d_model} must be an integer")
        self.d_inner = int(d_inner)
        self.d_ssm = self.d_inner if d_ssm is None else d_ssm
        if isinstance(self.d_ssm, bool) or not isinstance(self.d_ssm, int) or not 0 < self.d_ssm <= self.d_inner \
                or self.d_ssm % headdim:
            raise ValueError(f"{owner}: d_ssm={d_ssm!r} must be a multiple of headdim={headdim} between 1 and "
                             f"d_inner={self.d_inner} (expand * d_model)")
        self.nheads = self.d_ssm // headdim
        if self.nheads % ngroups:
            raise ValueError(f"{owner}: ngroups={ngroups} must divide the number of heads {self.nheads} "
                             f"(d_ssm / headdim)")
        factory = {"device": device, "dtype": dtype}
        self.d_state, self.d_conv, self.expand, self.headdim, self.ngroups = d_state, d_conv, expand, headdim, ngroups
        self.conv_init, self.D_has_hdim, self.rmsnorm, self.norm_before_gate = conv_init, D_has_hdim, rmsnorm, \
            norm_before_gate
        self.dt_limit, self.chunk_size, self.use_mem_eff_path = tuple(dt_limit), chunk_size, use_mem_eff_path
        self.d_mlp = self.d_inner - self.d_ssm
        self.conv_dim = self.d_ssm + 2 * ngroups * d_state

        # created in mamba-ssm's order, so the same seed draws the same weights. in_proj's order: [z0, x0, z, xBC, dt]
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + 2 * ngroups * d_state + self.nheads, bias=bias,
                                 **factory)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, padding=d_conv - 1,
                                bias=conv_bias, **factory)
        if conv_init is not None:
            nn.init.uniform_(self.conv1d.weight, -conv_init, conv_init)
        # dt_bias = softplus^-1 of a log-uniform dt in [dt_min, dt_max], one per head
        dt = torch.exp(torch.rand(self.nheads, **factory) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.dt_bias._no_weight_decay = True
        # A = -exp(A_log) with A_log = log of a uniform draw in A_init_range, one per head
        A = torch.empty(self.nheads, dtype=torch.float32, device=device).uniform_(*A_init_range)
        self.A_log = nn.Parameter(torch.log(A).to(dtype=dtype))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_ssm if D_has_hdim else self.nheads, device=device))
        self.D._no_weight_decay = True
        if rmsnorm:
            self.norm = GatedRMSNorm(self.d_ssm, eps=1e-5, group_size=self.d_ssm // ngroups,
                                     norm_before_gate=norm_before_gate, **factory)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)

    # ---- backends --------------------------------------------------------------------------------------------
    def _backend(self, device) -> str:
        return resolve_peer_backend(self.backend, device, "Mamba2", peer="cuda", package="mamba_ssm",
                                    install="pip install zoo[cuda]")

    def _conv_backend(self, chosen: str) -> str:
        if chosen == "cuda" and package_importable("causal_conv1d"):
            return "cuda"
        return "auto" if chosen == "reference" and self.backend == "auto" else "reference"

    # ---- pieces shared by the parallel forward and the step --------------------------------------------------
    def _split_projection(self, zxbcdt: torch.Tensor):
        return zxbcdt.split([self.d_mlp, self.d_mlp, self.d_ssm, self.conv_dim, self.nheads], dim=-1)

    def _ssm_arguments(self) -> dict:
        D = self.D.view(self.nheads, self.headdim) if self.D_has_hdim else self.D
        return dict(D=D, dt_bias=self.dt_bias, dt_softplus=True, dt_limit=self.dt_limit)

    def _A(self) -> torch.Tensor:
        """A = -exp(A_log) in float32 at least (a float16 A_log would round A to -inf, as mamba-ssm notes)."""
        return -torch.exp(self.A_log.to(torch.promote_types(self.A_log.dtype, torch.float32)))

    def _finish(self, y: torch.Tensor, z: torch.Tensor, z0: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Gated norm (or nothing: the scan already gated), the gated-MLP part when there is one, out_proj."""
        if self.rmsnorm:
            y = self.norm(y, z)
        if self.d_mlp > 0:
            y = torch.cat([F.silu(z0) * x0, y], dim=-1)
        return self.out_proj(y)

    # ---- forward ---------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, cache: Cache | None = None, seq_idx: torch.Tensor | None = None) -> torch.Tensor:
        self.check_packing(x, cache, seq_idx)
        batch, length, _ = x.shape
        if length == 0:  # an empty prefill changes nothing
            return x.new_zeros(x.shape)
        chosen = self._backend(x.device)
        if cache is not None and length == 1:
            return self._step(x, cache, chosen)
        z0, x0, z, xBC, dt = self._split_projection(self.in_proj(x))
        conv_args = dict(activation="silu", backend=self._conv_backend(chosen))
        weight = self.conv1d.weight[:, 0, :]
        if cache is None:
            xBC = causal_conv1d(xBC.transpose(1, 2), weight, self.conv1d.bias, seq_idx=seq_idx, **conv_args)
        else:
            xBC, conv_state = causal_conv1d(xBC.transpose(1, 2), weight, self.conv1d.bias,
                                            initial_states=cache["conv"], return_final_states=True, **conv_args)
            cache["conv"].copy_(conv_state)
        u, B, C = xBC.transpose(1, 2).split([self.d_ssm, self.ngroups * self.d_state, self.ngroups * self.d_state],
                                            dim=-1)
        y = ssd(u.unflatten(-1, (self.nheads, self.headdim)), dt, self._A(),
                B.unflatten(-1, (self.ngroups, self.d_state)), C.unflatten(-1, (self.ngroups, self.d_state)),
                chunk_size=self.chunk_size if chosen == "cuda" else min(self.chunk_size, REFERENCE_CHUNK),
                z=None if self.rmsnorm else z.unflatten(-1, (self.nheads, self.headdim)),
                initial_states=cache["ssm"] if cache is not None and cache.seen > 0 else None, seq_idx=seq_idx,
                return_final_states=cache is not None, backend=self.op_backend(chosen),
                **self._ssm_arguments())
        if cache is not None:
            y, final_state = y
            cache["ssm"].copy_(final_state)
            cache.seen += length
        return self._finish(y.flatten(-2), z, z0, x0)

    def _step(self, x: torch.Tensor, cache: Cache, chosen: str) -> torch.Tensor:
        """One token, O(1) in the sequence length: shift the conv window, one recurrence step."""
        z0, x0, z, xBC, dt = self._split_projection(self.in_proj(x[:, 0]))
        xBC = causal_conv1d_step(cache["conv"], xBC, self.conv1d.weight[:, 0, :], self.conv1d.bias,
                                 activation="silu")
        u, B, C = xBC.split([self.d_ssm, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        step = ssd_step
        arguments = self._ssm_arguments()
        if chosen == "cuda":
            from ops.ssd.cuda import ssd_step_mamba_ssm as step
            del arguments["dt_limit"]  # mamba-ssm's decode kernel has no dt_limit; Mamba2.step leaves it out too
        y = step(cache["ssm"], u.unflatten(-1, (self.nheads, self.headdim)), dt, self._A(),
                 B.unflatten(-1, (self.ngroups, self.d_state)), C.unflatten(-1, (self.ngroups, self.d_state)),
                 z=None if self.rmsnorm else z.unflatten(-1, (self.nheads, self.headdim)), **arguments)
        cache.seen += 1
        return self._finish(y.flatten(-2), z, z0, x0)[:, None]

    # ---- decoding state --------------------------------------------------------------------------------------
    def allocate_cache(self, batch_size: int, device=None, dtype=None) -> Cache:
        """conv: the last d_conv - 1 inputs of xBC (model dtype); ssm: the SSD state, float32 (or wider)."""
        weight = self.in_proj.weight
        device = device or weight.device
        dtype = dtype or weight.dtype
        return Cache(
            conv=torch.zeros(batch_size, self.conv_dim, self.d_conv - 1, device=device, dtype=dtype),
            ssm=torch.zeros(batch_size, self.nheads, self.headdim, self.d_state, device=device,
                            dtype=torch.promote_types(dtype, torch.float32)),
        )

    def state_size(self, seq_len: int) -> int:
        return self.nheads * self.headdim * self.d_state + self.conv_dim * (self.d_conv - 1)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, nheads={self.nheads}, headdim={self.headdim}, "
                f"ngroups={self.ngroups}, d_conv={self.d_conv}, backend={self.backend!r}")
