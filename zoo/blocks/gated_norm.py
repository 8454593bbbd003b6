"""RMSNorm with an output gate, as Mamba-2 and GLA use it (float32 inside, the input's dtype out).

norm_before_gate: rmsnorm(x) * weight * act(z) (fla's ``FusedRMSNormGated``; mamba-ssm's gated ``RMSNorm`` with
norm_before_gate=True); otherwise rmsnorm(x * act(z)) * weight (mamba-ssm's Mamba2 default). ``group_size``
normalises each group of that many channels on its own (mamba-ssm's ngroups); the weight spans every channel.
"""
import torch
import torch.nn.functional as F
from torch import nn

GATES = {"swish": F.silu, "silu": F.silu, "sigmoid": torch.sigmoid}


class GatedRMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-5, group_size: int | None = None,
                 norm_before_gate: bool = True, elementwise_affine: bool = True, gate: str = "silu",
                 device=None, dtype=None):
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"GatedRMSNorm: gate must be one of {', '.join(GATES)}, got {gate!r}")
        self.hidden_size, self.eps, self.norm_before_gate = hidden_size, eps, norm_before_gate
        self.group_size = group_size or hidden_size
        self.gate = gate
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        dtype = x.dtype
        x = x.float() if x.dtype != torch.float64 else x
        gate = None if z is None else GATES[self.gate](z.to(x.dtype))
        if gate is not None and not self.norm_before_gate:
            x = x * gate
        groups = x.unflatten(-1, (-1, self.group_size))
        x = (groups * torch.rsqrt(groups.square().mean(-1, keepdim=True) + self.eps)).flatten(-2)
        if self.weight is not None:
            x = x * self.weight.to(x.dtype)
        if gate is not None and self.norm_before_gate:
            x = x * gate
        return x.to(dtype)

    def extra_repr(self) -> str:
        return (f"{self.hidden_size}, eps={self.eps}, group_size={self.group_size}, "
                f"norm_before_gate={self.norm_before_gate}, gate={self.gate!r}")
