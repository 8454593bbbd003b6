"""The public op names are functions on ``ops`` whatever was imported first (their folders share the names)."""
import subprocess
import sys

import ops

PUBLIC = ["selective_scan", "causal_conv1d", "linear_recurrence", "log_linear_recurrence", "based_attention",
          "running_topk", "ssd", "gla"]


def test_public_ops_are_functions():
    for name in PUBLIC:
        assert callable(getattr(ops, name)) and getattr(ops, name).__name__ == name


def test_public_ops_survive_importing_their_modules_first():
    script = ("from ops.selective_scan import reference\nfrom ops.based import triton\n"
              "import ops.linear_recurrence.reference\nimport ops\n"
              f"assert all(getattr(ops, n).__name__ == n for n in {PUBLIC!r})")
    subprocess.run([sys.executable, "-c", script], check=True)
