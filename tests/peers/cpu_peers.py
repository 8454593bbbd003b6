"""The peers' own pure-PyTorch definitions, loaded on a machine without CUDA.

mamba-ssm and causal-conv1d import their compiled extensions at module top level, and mamba-ssm's package
``__init__`` pulls in Mamba-2 and huggingface_hub; none of that is needed to run their reference functions or
the ``Mamba`` module's non-fused path. So, for tests only, the compiled extensions are stubbed and mamba_ssm is
entered without running its ``__init__``. fla-core's naive references and its Triton kernels (under
TRITON_INTERPRET=1) import as they are.

``scripts/install_cpu_peers.sh`` installs the three packages without their CUDA builds (CI runs it). Where they
are missing the peer tests skip, unless ZOO_REQUIRE_PEERS=1 (set by CI): then a missing peer is a failure, so
that these tests cannot silently stop running.
"""
import importlib
import importlib.util
import os
import sys
import types

import pytest
import torch


def _cpu_only():
    """These loaders stub the CUDA extensions and patch mamba_simple in place: on a GPU they would hide the real
    kernels from the CUDA parity tests (tests/ops, tests/blocks), which compare against the peers directly."""
    if torch.cuda.is_available():
        pytest.skip("with CUDA the peers' kernels are compared directly by tests/ops and tests/blocks")


def _missing(package: str):
    message = f"{package} is not installed (bash scripts/install_cpu_peers.sh)"
    if os.environ.get("ZOO_REQUIRE_PEERS") == "1":
        pytest.fail(message + "; ZOO_REQUIRE_PEERS=1 requires it")
    pytest.skip(message)


def _stub_extension(name: str):
    """An empty module in place of a compiled CUDA extension that is not built: never called on CPU."""
    if name not in sys.modules and importlib.util.find_spec(name) is None:
        sys.modules[name] = types.ModuleType(name)


def _enter_without_init(package: str):
    """Make ``package``'s submodules importable without executing its ``__init__``."""
    if package in sys.modules:
        return
    sys.modules[package] = importlib.util.module_from_spec(importlib.util.find_spec(package))  # not executed


def mamba_ssm():
    """(mamba_simple, selective_scan_interface) modules of mamba-ssm, set to run on CPU.

    In mamba_simple, the CUDA ``selective_scan_fn`` is replaced by mamba-ssm's own ``selective_scan_ref`` and
    the Triton decode update by its torch fallback, so ``Mamba.forward`` and ``Mamba.step`` are mamba-ssm's
    code end to end.
    """
    _cpu_only()
    if importlib.util.find_spec("mamba_ssm") is None:
        _missing("mamba_ssm")
    _stub_extension("selective_scan_cuda")
    _stub_extension("causal_conv1d_cuda")
    _enter_without_init("mamba_ssm")
    interface = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
    mamba_simple = importlib.import_module("mamba_ssm.modules.mamba_simple")
    mamba_simple.selective_scan_fn = interface.selective_scan_ref
    mamba_simple.selective_state_update = None
    mamba_simple.causal_conv1d_fn = None
    mamba_simple.causal_conv1d_update = None
    return mamba_simple, interface


def causal_conv1d_ref():
    """causal-conv1d's ``causal_conv1d_ref(x, weight, bias, initial_states, return_final_states, ...)``."""
    _cpu_only()
    if importlib.util.find_spec("causal_conv1d") is None:
        _missing("causal_conv1d")
    _stub_extension("causal_conv1d_cuda")
    return importlib.import_module("causal_conv1d.causal_conv1d_interface").causal_conv1d_ref


def fla_module(name: str):
    """A module of fla-core (``fla.ops.based.naive``, ``fla.ops.based``, ...)."""
    _cpu_only()
    if importlib.util.find_spec("fla") is None:
        _missing("fla (fla-core)")
    return importlib.import_module(name)


def fla_layer(module: str):
    """A layer module of flash-linear-attention (``fla.layers.delta_net``, ...), entered without running
    ``fla.layers.__init__``, which imports every layer and with them transformers (not needed by the layers tested here)."""
    _cpu_only()
    fla_module("fla")
    if importlib.util.find_spec("fla.layers") is None:
        _missing("fla.layers (flash-linear-attention)")
    _enter_without_init("fla.layers")
    return importlib.import_module(module)


def mamba_ssm_mamba2():
    """(mamba2, ssd_combined) modules of mamba-ssm, set to run on CPU with mamba-ssm's own PyTorch references.

    Mamba2's non-fused path (use_mem_eff_path=False) calls the Triton ``mamba_chunk_scan_combined`` and the Triton
    gated RMSNorm; here they are mamba-ssm's ``ssd_chunk_scan_combined_ref`` (no initial states, no seq_idx) and
    ``rms_norm_ref``; the conv is its nn.Conv1d path and the decode step its torch path (ngroups 1). Its package
    pulls in huggingface_hub for a mixin only: an empty stand-in where it is not installed.
    """
    _cpu_only()
    if importlib.util.find_spec("mamba_ssm") is None:
        _missing("mamba_ssm")
    mamba_ssm()  # the compiled extensions stubbed, the package entered without its __init__
    if importlib.util.find_spec("huggingface_hub") is None:
        hub = types.ModuleType("huggingface_hub")
        hub.PyTorchModelHubMixin = type("PyTorchModelHubMixin", (), {})
        sys.modules["huggingface_hub"] = hub
    combined = importlib.import_module("mamba_ssm.ops.triton.ssd_combined")
    gated_norm = importlib.import_module("mamba_ssm.ops.triton.layernorm_gated")
    mamba2 = importlib.import_module("mamba_ssm.modules.mamba2")

    def chunk_scan(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_softplus=False, seq_idx=None,
                   cu_seqlens=None, return_final_states=False, return_varlen_states=False, **limit):
        assert seq_idx is None and cu_seqlens is None and not return_final_states and not limit
        return combined.ssd_chunk_scan_combined_ref(x, dt, A, B, C, chunk_size, D, z, dt_bias, dt_softplus)

    def rmsnorm_fn(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True):
        return gated_norm.rms_norm_ref(x, weight, bias, z, eps, group_size, norm_before_gate)

    mamba2.mamba_chunk_scan_combined = chunk_scan
    mamba2.causal_conv1d_fn = mamba2.causal_conv1d_update = None
    mamba2.selective_state_update = None
    gated_norm.rmsnorm_fn = rmsnorm_fn
    return mamba2, combined


def first_autotune_config(monkeypatch):
    """Triton's autotuner benchmarks its configs on a GPU driver, which the interpreter has not: there each
    autotuned peer kernel runs its first config (the values do not depend on the config)."""
    from triton.runtime import autotuner
    prune = autotuner.Autotuner.prune_configs
    monkeypatch.setattr(autotuner.Autotuner, "prune_configs", lambda self, kwargs: prune(self, kwargs)[:1])
