"""Gated short causal convolution (zoology's BaseConv): the local-mixing partner of every MQAR mixer.

y = conv(x) * proj(x), with conv a depthwise causal convolution over time (kernel 3 by default).
Decoding keeps the last kernel_size - 1 inputs. Packed rows (``seq_idx``): the taps that would reach into the
previous document read zero (``ops.causal_conv1d``'s packed reference).
"""
import torch
import torch.nn.functional as F
from torch import nn

from ops.causal_conv1d import causal_conv1d
from zoo.blocks.base import Cache, Mixer
from zoo.blocks.registry import register_mixer
from zoo.checks import require_positive_int


@register_mixer("short_conv")
class ShortConv(Mixer):
    backends = ("auto", "reference")  # a kernel-3 depthwise conv is cheap; nn.functional.conv1d is the path
    def __init__(self, d_model: int, layer_idx: int = 0, backend: str = "auto", kernel_size: int = 3, bias: bool = True):
        super().__init__(d_model, layer_idx, backend)
        require_positive_int("kernel_size", kernel_size, "ShortConv")
        self.kernel_size = kernel_size
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.conv = nn.Conv1d(d_model, d_model, kernel_size, groups=d_model, padding=0, bias=bias)

    def _conv(self, x_padded: torch.Tensor) -> torch.Tensor:
        """x_padded: (batch, d_model, seq + kernel_size - 1) -> (batch, d_model, seq)."""
        return F.conv1d(x_padded, self.conv.weight, self.conv.bias, groups=self.d_model)

    def forward(self, x: torch.Tensor, cache: Cache | None = None, seq_idx: torch.Tensor | None = None) -> torch.Tensor:
        self.check_packing(x, cache, seq_idx)
        xt = x.transpose(1, 2)
        if seq_idx is not None:
            conv = causal_conv1d(xt, self.conv.weight[:, 0, :], self.conv.bias, seq_idx=seq_idx, backend="reference")
            return conv.transpose(1, 2) * self.proj(x)
        if cache is None:
            history = xt.new_zeros(xt.shape[0], self.d_model, self.kernel_size - 1)
        else:
            history = cache["conv"].to(xt.dtype)
        padded = torch.cat([history, xt], dim=2)
        if cache is not None:
            cache["conv"] = padded[:, :, padded.shape[2] - (self.kernel_size - 1):].to(cache["conv"].dtype)
            cache.seen += x.shape[1]
        return self._conv(padded).transpose(1, 2) * self.proj(x)

    def allocate_cache(self, batch_size: int, device=None, dtype=None) -> Cache:
        weight = self.proj.weight
        return Cache(conv=torch.zeros(batch_size, self.d_model, self.kernel_size - 1,
                                      device=device or weight.device, dtype=dtype or weight.dtype))

    def state_size(self, seq_len: int) -> int:
        return self.d_model * (self.kernel_size - 1)
