"""Sequence ops: one folder per op, each with a pure-PyTorch ``reference.py`` (the definition) and a fused
``triton.py`` kernel (plus adapters to CUDA packages when they are installed).

The public functions dispatch on ``backend`` ("auto" | "reference" | "triton" | "cuda"). They are imported
lazily so that ``import ops`` never pulls in Triton or an optional CUDA package.
"""
import importlib

# public name -> submodule that defines it
_PUBLIC = {
    "selective_scan": "ops.selective_scan",
    "causal_conv1d": "ops.causal_conv1d",
    "linear_recurrence": "ops.linear_recurrence",
    "log_linear_recurrence": "ops.linear_recurrence",
    "based_attention": "ops.based",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'ops' has no attribute {name!r}; public ops: {', '.join(__all__)}")
