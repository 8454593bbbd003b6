"""Blocks whose "auto" backend reaches a compiled CPU kernel through their op (GLA, DeltaNet, Gated DeltaNet and
RWKV-7 through the DPLR kernel) against the same block with backend="reference": same weights, outputs through
a cache (prefill, continued prefill, decode), the cached state, the input's and every parameter's gradient; and
that "auto" did run the kernel."""
import pytest
import torch

from ops.dplr_delta_rule import cpu as dplr_cpu
from tests.blocks.backend_parity import assert_backend_matches_reference
from tests.native import require_kernel, spy_on
from zoo.blocks.registry import build_mixer

require_kernel(dplr_cpu, "the CPU DPLR kernel")

# (registered name, constructor keywords, the cache entry holding the recurrent state)
CASES = [("gla", {"num_heads": 2}, "state"), ("deltanet", {"num_heads": 2}, "recurrent"),
         ("gated_deltanet", {"num_heads": 2, "head_dim": 16}, "recurrent"), ("rwkv7", {"head_dim": 16}, "state")]


@pytest.mark.parametrize("name, knobs, state_key", CASES, ids=[c[0] for c in CASES])
def test_auto_on_cpu_runs_the_kernel_and_matches_the_reference(name, knobs, state_key, monkeypatch):
    calls = spy_on(monkeypatch, dplr_cpu, "dplr_delta_rule_cpu")
    torch.manual_seed(0)
    reference = build_mixer(name, 32, backend="reference", **knobs)
    auto = build_mixer(name, 32, backend="auto", **knobs)
    reference(torch.randn(1, 5, 32))
    assert not calls, "backend='reference' stays on the chunked reference"
    assert_backend_matches_reference(reference, auto, state_key, d_model=32, length=40, device="cpu")
    assert calls, "backend='auto' on CPU reaches the compiled kernel"
