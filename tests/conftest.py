import os

import pytest
import torch

# Without a GPU, Triton kernels run in Triton's interpreter. The flag is read when kernels are defined,
# so it must be set before any test module imports one.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def private_cache_folder(tmp_path_factory, monkeypatch):
    """Caches (BPE tokenisers under $XDG_CACHE_HOME/zoo) go to the test session's folder, not the user's ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def triton_device() -> torch.device:
    """Where a ``backend="triton"`` test runs its kernel: the GPU when there is one (compiled kernels), else the
    CPU under Triton's interpreter. Tests build their inputs on the CPU (seeded CPU generators, so both machines
    draw the same numbers), move them here for the kernel, and compare on the CPU against the reference."""
    pytest.importorskip("triton")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.fail("no CUDA device and TRITON_INTERPRET is not 1: backend='triton' cannot run here")
    return torch.device("cpu")


@pytest.fixture
def interpreter_scan_tiles() -> tuple[int, int]:
    """(BLOCK_D, BLOCK_L) of the selective scan under the interpreter; a folder's conftest may override it."""
    return (4, 16)


@pytest.fixture(autouse=True)
def small_scan_tiles_in_the_interpreter(monkeypatch, interpreter_scan_tiles):
    """The interpreter runs a kernel as NumPy, one program at a time: at the selective scan's launch tiles (512 time
    steps per chunk) one small Mamba test takes minutes. Under the interpreter every test gets small tiles, which
    also make small inputs span several ragged chunks and channel blocks; a test may still set its own. On a GPU
    the launch tiles stay (compiled kernels at their real configuration)."""
    if os.environ.get("TRITON_INTERPRET") == "1" and not torch.cuda.is_available():
        try:
            from ops.selective_scan import triton as scan_kernel
        except ImportError:  # no triton installed: the Triton tests skip anyway
            return
        monkeypatch.setattr(scan_kernel, "_TEST_TILES", interpreter_scan_tiles)
