import pytest


@pytest.fixture
def interpreter_scan_tiles() -> tuple[int, int]:
    """Block tests check a block's wiring of its kernels, not the kernels' tiling (tests/ops does that, at ragged
    small tiles and at the launch tiles): under the interpreter the selective scan runs one program per batch row
    here (64 channels), 16 steps per chunk, so several chunks still run and the interpreter's per-program cost
    is paid a few times instead of dozens."""
    return (64, 16)
