"""Mamba2 specifics (the generic contract and packing tests cover the rest): hyperparameter errors, state size,
the backend choice on CPU, and on a GPU the "cuda" path (mamba-ssm's kernels) against the reference and against
mamba-ssm's own Mamba2, prefill continuation and decode included."""
import pytest
import torch

from ops.testing import assert_close
from tests.blocks.backend_parity import assert_backend_matches_reference
from tests.native import spy_on
from zoo.blocks.mamba2 import Mamba2


@pytest.mark.parametrize("bad, message", [
    (dict(headdim=24), "d_ssm=None must be a multiple of headdim=24"),
    (dict(headdim=16, ngroups=3), "ngroups=3 must divide the number of heads 4"),
    (dict(d_state=0), "d_state must be a positive integer, got 0"),
    (dict(expand=1.5, d_model=33), "expand=1.5 times d_model=33 must be an integer"),
    (dict(dt_min=0.5, dt_max=0.1), "dt_min=0.5 must not exceed dt_max=0.1"),
    (dict(A_init_range=(0, 4)), "A_init_range"),
    (dict(dt_limit=(0.5, 0.1)), "dt_limit"),
    (dict(backend="triton"), "backend 'triton' is not offered"),
])
def test_bad_hyperparameters_name_themselves(bad, message):
    with pytest.raises(ValueError, match=message):
        Mamba2(**{"d_model": 32, **bad})


def test_state_size_counts_the_ssm_state_and_the_conv_window():
    mixer = Mamba2(32, d_state=8, headdim=16, ngroups=2, d_conv=3)
    nheads, conv_dim = 64 // 16, 64 + 2 * 2 * 8
    assert mixer.state_size(100) == nheads * 16 * 8 + conv_dim * 2
    cache = mixer.allocate_cache(2, dtype=torch.bfloat16)
    assert cache["ssm"].dtype == torch.float32 and cache["conv"].dtype == torch.bfloat16


def test_auto_runs_the_reference_on_cpu_and_cuda_needs_a_gpu():
    x = torch.randn(1, 5, 32)
    torch.manual_seed(0)
    auto = Mamba2(32, d_state=8, headdim=16)
    torch.manual_seed(0)
    reference = Mamba2(32, d_state=8, headdim=16, backend="reference")
    torch.testing.assert_close(auto(x), reference(x))
    with pytest.raises(ValueError, match="backend='cuda' needs a CUDA device"):
        Mamba2(32, d_state=8, headdim=16, backend="cuda")(x)


def test_auto_on_cpu_takes_the_compiled_ssd_and_reference_does_not(monkeypatch):
    """backend="auto" reaches ops.ssd as "auto" (its compiled CPU path), with the same outputs and gradients."""
    import importlib
    cpu = importlib.import_module("ops.ssd.cpu")
    if not cpu.available():
        pytest.skip(f"the CPU SSD kernel is unavailable: {cpu.unavailable_reason()}")
    calls = spy_on(monkeypatch, cpu, "ssd_cpu")
    x = torch.randn(2, 9, 32)
    outputs, calls_after = [], []
    for backend in ("auto", "reference"):
        torch.manual_seed(0)
        mixer = Mamba2(32, d_state=8, headdim=16, backend=backend)
        leaf = x.clone().requires_grad_(True)
        out = mixer(leaf)
        out.square().sum().backward()
        outputs.append((out, leaf.grad, mixer.A_log.grad))
        calls_after.append(len(calls))
    assert calls_after == [1, 1]
    for name, mine, want in zip(("out", "grad x", "grad A_log"), *outputs):
        assert_close(name, mine, want, torch.float32)


def _cuda_or_skip():
    if not torch.cuda.is_available():
        pytest.skip("mamba-ssm's kernels need CUDA")
    pytest.importorskip("mamba_ssm", reason="mamba_ssm is not installed")


@pytest.mark.parametrize("config", [dict(d_state=64, headdim=32), dict(d_state=16, headdim=16, ngroups=2)],
                         ids=["default-ish", "groups"])
def test_cuda_backend_matches_the_reference_with_prefill_and_decode(config):
    _cuda_or_skip()
    torch.manual_seed(0)
    reference = Mamba2(64, backend="reference", **config).cuda()
    fused = Mamba2(64, backend="cuda", **config).cuda()
    assert_backend_matches_reference(reference, fused, "ssm")


def test_parity_with_mamba_ssm_mamba2_on_gpu():
    _cuda_or_skip()
    from mamba_ssm.modules.mamba2 import Mamba2 as Theirs
    torch.manual_seed(0)
    theirs = Theirs(64, d_state=64, headdim=32, layer_idx=0).cuda()
    mine = Mamba2(64, d_state=64, headdim=32, backend="cuda").cuda()
    mine.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 300, 64, device="cuda")
    assert_close("out vs mamba_ssm", mine(x), theirs(x), torch.float32, scale=5)
