"""Channel mixers for the trunk's optional MLP sublayer."""
import torch
import torch.nn.functional as F
from torch import nn

from zoo.blocks.registry import register_mlp
from zoo.checks import require_positive_int


def _hidden_width(d_model: int, expand: float, multiple_of: int, owner: str) -> int:
    if not expand > 0:
        raise ValueError(f"{owner}: expand must be > 0, got {expand!r}")
    require_positive_int("multiple_of", multiple_of, owner)
    hidden = int(d_model * expand)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@register_mlp("swiglu")
class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)); expand 8/3 keeps the parameter count of a 4x GELU MLP."""

    def __init__(self, d_model: int, expand: float = 8 / 3, multiple_of: int = 16, bias: bool = False):
        super().__init__()
        require_positive_int("d_model", d_model, "SwiGLU")
        hidden = _hidden_width(d_model, expand, multiple_of, "SwiGLU")
        self.gate_up_proj = nn.Linear(d_model, 2 * hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


@register_mlp("gelu")
class GeluMLP(nn.Module):
    """down(gelu(up(x))), the GPT-2 MLP."""

    def __init__(self, d_model: int, expand: float = 4, multiple_of: int = 16, bias: bool = True):
        super().__init__()
        require_positive_int("d_model", d_model, "GeluMLP")
        hidden = _hidden_width(d_model, expand, multiple_of, "GeluMLP")
        self.up_proj = nn.Linear(d_model, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))
