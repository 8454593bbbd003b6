"""Benchmark cases for ``python -m zoo.bench ops linear_recurrence``.

- linear form, B8 T2048 D1536 (gpu preset): ours (reference, triton) vs fla ``chunk_hgrn`` and
  ``fused_recurrent_hgrn`` when importable.
- log form, same shape: ours (reference, triton) vs the pure-PyTorch log-space scan of the minGRU paper's code
  (cumulative sum + ``logcumsumexp``, float32).
(The MinGRU layer against cuDNN ``nn.GRU`` is timed beside these by zoo/bench/layer_cases.py.)
"""
import torch
import torch.nn.functional as F

from ops._backend import package_importable
from ops.linear_recurrence.reference import linear_recurrence_reference, log_linear_recurrence_reference
from ops.bench_cases import OpCase, OpImpl

SHAPES = {"gpu": dict(batch=8, length=2048, width=1536), "cpu": dict(batch=2, length=256, width=64)}


def log_space_scan_logcumsumexp(log_coeffs, log_values):
    """The minGRU paper's parallel form: log h_t = A_t + logcumsumexp_s(log_values_s - A_s), A = cumsum(log_coeffs)."""
    cum = torch.cumsum(log_coeffs.float(), dim=1)
    return torch.exp(cum + torch.logcumsumexp(log_values.float() - cum, dim=1))


def leaf(t: torch.Tensor, dtype) -> torch.Tensor:
    return t.to(dtype).detach().requires_grad_()


def _fla_peers() -> list[OpImpl]:
    if not package_importable("fla"):
        return []
    try:
        from fla.ops.hgrn import chunk_hgrn, fused_recurrent_hgrn
    except Exception as error:  # installed but broken (e.g. a triton mismatch): time the rest
        print(f"[linear_recurrence bench] fla.ops.hgrn not importable: {error}")
        return []
    return [OpImpl("fla chunk_hgrn", lambda x, g: chunk_hgrn(x, g), peer=True),
            OpImpl("fla fused_recurrent_hgrn", lambda x, g: fused_recurrent_hgrn(x, g), peer=True)]


def _scan_cases(preset, device, dtype) -> list[OpCase]:
    batch, length, width = SHAPES[preset].values()
    shape = f"B{batch} T{length} D{width}"
    floor = 3 * batch * length * width * torch.finfo(dtype).bits // 8  # two inputs read, h written
    on_gpu = device.type == "cuda"

    def linear_inputs():
        return {"x": leaf(torch.randn(batch, length, width, device=device), dtype),
                "g": leaf(F.logsigmoid(torch.randn(batch, length, width, device=device)), dtype)}

    def log_inputs():
        return {"log_coeffs": leaf(F.logsigmoid(torch.randn(batch, length, width, device=device)), dtype),
                "log_values": leaf(F.logsigmoid(torch.randn(batch, length, width, device=device)), dtype)}

    linear = OpCase("linear_recurrence", shape, linear_inputs, floor,
                    (_fla_peers() if on_gpu else []) + [OpImpl("reference", linear_recurrence_reference)])
    log = OpCase("linear_recurrence", f"log form {shape}", log_inputs, floor,
                 [OpImpl("logcumsumexp scan (fp32)", log_space_scan_logcumsumexp, peer=True),
                  OpImpl("reference", log_linear_recurrence_reference)])
    if on_gpu:
        from ops.linear_recurrence.triton import linear_recurrence_triton, log_linear_recurrence_triton
        linear.impls.append(OpImpl("triton", linear_recurrence_triton))
        log.impls.append(OpImpl("triton", log_linear_recurrence_triton))
    return [linear, log]


def cases(preset: str, device: torch.device, dtype: torch.dtype) -> list[OpCase]:
    return _scan_cases(preset, device, dtype)
