"""Whole blocks timed beside an op in ``python -m zoo.bench ops``.

- mingru_layer, B8 T512 width 1536: one MinGRU layer (expand 1) vs cuDNN ``nn.GRU`` of the same width, the
  minGRU paper's "175x faster at length 512" comparison. Its floor counts only the layer input and output, not
  the weights.
"""
import torch

from ops.bench_cases import OpCase, OpImpl
from ops.linear_recurrence.bench import leaf
from zoo.blocks.mingru import MinGRU

LAYER_SHAPES = {"gpu": dict(batch=8, length=512, width=1536), "cpu": dict(batch=2, length=64, width=64)}


def _gru_peer(width, device, dtype) -> OpImpl:
    """cuDNN nn.GRU in the benchmark dtype, or in float32 (named so) where the dtype is not supported."""
    gru = torch.nn.GRU(width, width, batch_first=True).to(device)
    try:
        gru.to(dtype)(torch.zeros(1, 2, width, device=device, dtype=dtype))
        name = "nn.GRU (cuDNN)" if device.type == "cuda" else "nn.GRU"
        return OpImpl(name, lambda x: gru(x)[0], peer=True)
    except RuntimeError:
        gru.float()
        return OpImpl("nn.GRU fp32", lambda x: gru(x.float())[0], peer=True)


def mingru_layer_case(preset, device, dtype) -> OpCase:
    batch, length, width = LAYER_SHAPES[preset].values()
    floor = 2 * batch * length * width * torch.finfo(dtype).bits // 8

    def inputs():
        return {"x": leaf(torch.randn(batch, length, width, device=device), dtype)}

    impls = [_gru_peer(width, device, dtype)]
    backends = ["triton", "reference"] if device.type == "cuda" else ["reference"]
    for backend in backends:
        layer = MinGRU(width, backend=backend).to(device=device, dtype=dtype)
        impls.append(OpImpl(f"MinGRU layer ({backend})", layer))
    return OpCase("mingru_layer", f"B{batch} T{length} d{width}", inputs, floor, impls)
