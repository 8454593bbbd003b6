"""Sequence ops: one folder per op, each with a pure-PyTorch ``reference.py`` (the definition) and, where we
wrote one, a fused ``triton.py`` kernel; adapters to the peers' kernels (``cuda.py`` for mamba-ssm and
causal-conv1d, ``fla.py`` for fla) where a maintained package has the fast GPU path; a compiled CPU path where the
CPU needs one. ``causal_conv1d`` has no kernel of its own (its reference is one grouped conv).

The public functions dispatch on ``backend`` (``ops._backend`` says what "auto" takes). Each op's package
``__init__`` is light: Triton and the peers' packages are imported only when a backend needs them.
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
    "dplr_delta_rule": "ops.dplr_delta_rule",  # RWKV-7's diagonal-plus-low-rank delta rule
    "delta_rule": "ops.delta_rule",
    "gated_delta_rule": "ops.gated_delta_rule",
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
