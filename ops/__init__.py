"""Sequence ops: one folder per op, each with a pure-PyTorch ``reference.py`` (the definition) and a fused
``triton.py`` kernel (plus adapters to CUDA packages when they are installed).

The public functions dispatch on ``backend`` ("auto" | "reference" | "triton" | "cuda"). Each op's package
``__init__`` is light (Triton and CUDA packages are imported only when a backend needs them).
"""
import importlib

# public name -> submodule that defines it
_PUBLIC = {
    "selective_scan": "ops.selective_scan",
    "causal_conv1d": "ops.causal_conv1d",
    "linear_recurrence": "ops.linear_recurrence",
    "log_linear_recurrence": "ops.linear_recurrence",
    "based_attention": "ops.based",
    "running_topk": "ops.co4",  # Co4's causal running top-k
    "ssd": "ops.ssd",
    "gla": "ops.gla",
}

__all__ = sorted(_PUBLIC)

# An op's function shares its name with its folder, and importing a subpackage binds the package to that
# name on ``ops``. Importing every op package here, then binding the functions, settles the name once: later
# imports of ``ops.<op>.<module>`` find the package in sys.modules and leave the attribute alone. Reach an op's
# modules with ``from ops.<op> import reference`` (``import ops.<op>.reference as r`` would look the module up
# through the function).
for _name, _module in _PUBLIC.items():
    globals()[_name] = getattr(importlib.import_module(_module), _name)
del _name, _module
