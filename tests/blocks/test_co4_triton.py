"""The Co4 block's tests again with backend="triton": the running top-k as the fused kernel (on the GPU, or in
Triton's interpreter on CPU) must give the same outputs, gradients, decoding and caches as the chunked path."""
import pytest
import torch

import tests.blocks.test_co4 as chunked
# not rerun: causality across chunks (the kernel's prefix top-k is tested against the reference in tests/ops, and
# the oracle comparison below covers the block), which alone took ~30 s in the interpreter; prefill-then-decode
# runs at two of its eight points (below)
from tests.blocks.test_co4 import (  # noqa: F401  (collected here, run with the kernel)
    test_cache_holds_the_running_top_k_of_each_modulated_stream, test_float64_and_bfloat16_run_and_decode, test_repeated_inputs_decode_like_the_parallel_forward,
    test_results_do_not_depend_on_chunk_size, test_state_size_is_exact_and_constant)


@pytest.fixture(autouse=True)
def blocks_use_the_kernel(monkeypatch, triton_device):
    """Every block those tests build through ``_block`` asks for the kernel. The tests build their inputs on the
    CPU, so off a GPU (interpreter) this runs as is; on a GPU the kernel tests in tests/ops cover the device."""
    if triton_device.type != "cpu":
        pytest.skip("these tests keep their tensors on the CPU: with a GPU, test_mixer_contract's triton case runs")
    build = chunked._block
    monkeypatch.setattr(chunked, "_block", lambda *args, **hyper: build(*args, **dict(hyper, backend="triton")))


@pytest.mark.parametrize("hyper,seq", chunked.SETTINGS, ids=lambda v: str(v) if isinstance(v, int) else None)
def test_kernel_equals_oracle_outputs_and_gradients(hyper, seq):
    chunked.test_chunked_equals_oracle_outputs_and_gradients(hyper, seq, "triton")


@pytest.mark.parametrize("prefill,dtype", [(0, torch.float32), (4, torch.float64)], ids=str)
def test_prefill_then_decode_equals_parallel_forward(prefill, dtype):
    """Decoding from an empty cache, and from a prefill shorter than k's table (initial_count < k)."""
    chunked.test_prefill_then_decode_equals_parallel_forward(prefill, dtype)
