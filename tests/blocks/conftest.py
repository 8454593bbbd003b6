import os

import pytest
import torch


@pytest.fixture(autouse=True)
def small_scan_tiles_in_the_interpreter(monkeypatch):
    """Block tests check a block's wiring of its kernels, not the kernels' tiling (tests/ops does that, at ragged
    small tiles and at the launch tiles): under the interpreter the selective scan runs one program per batch row
    here (64 channels), 16 steps per chunk, so several chunks still run and the interpreter's per-program cost
    is paid a few times instead of dozens."""
    if os.environ.get("TRITON_INTERPRET") == "1" and not torch.cuda.is_available():
        try:
            from ops.selective_scan import triton as scan_kernel
        except ImportError:
            return
        monkeypatch.setattr(scan_kernel, "_TEST_TILES", (64, 16))
