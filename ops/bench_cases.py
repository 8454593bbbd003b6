"""What an op's benchmark declares (``ops/<op>/bench.py``: ``cases(preset, device, dtype) -> list[OpCase]``); the
timing harness that runs them is ``python -m zoo.bench ops`` (zoo/bench/ops.py). Kept here so that the ops'
benchmark files never import the layer above them."""
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class OpImpl:
    name: str                       # "reference", "triton", "mamba-ssm", ...
    fn: Callable[..., object]       # called as fn(**inputs); returns a tensor or a tuple of tensors
    peer: bool = False              # a competitor measured for the ratio column
    backward: bool = True           # whether fwd+bwd is timed


@dataclass
class OpCase:
    op: str
    shape: str                      # human label, e.g. "B8 D1536 L2048 N16"
    make_inputs: Callable[[], dict] # fresh inputs (leaf tensors requiring grad where gradients are timed)
    floor_bytes: int                # bytes read + written once by an ideal kernel
    impls: list[OpImpl] = field(default_factory=list)
