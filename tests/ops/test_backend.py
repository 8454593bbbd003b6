import pytest
import torch

from ops._backend import resolve_backend, resolve_peer_backend


def test_auto_is_the_reference_on_cpu():
    assert resolve_backend("auto", torch.device("cpu"), "op") == "reference"


def test_reference_is_always_available():
    assert resolve_backend("reference", torch.device("cpu"), "op") == "reference"


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        resolve_backend("triton", torch.device("cpu"), "op")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_backend("triton", torch.device("cpu"), "op") == "triton"


def test_cuda_backend_needs_cuda_and_the_package():
    with pytest.raises(ValueError, match="no CUDA-package backend"):
        resolve_backend("cuda", torch.device("cpu"), "op")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_backend("cuda", torch.device("cpu"), "op", cuda_package="some_package")


def test_unknown_backend_lists_the_choices():
    with pytest.raises(ValueError, match="auto, reference, triton, cuda"):
        resolve_backend("fast", torch.device("cpu"), "op")


def test_peer_backend_auto_is_the_reference_on_cpu_and_the_peer_is_named_in_errors():
    cpu = torch.device("cpu")
    assert resolve_peer_backend("auto", cpu, "op", "fla", "fla", "pip install zoo[fla]") == "reference"
    assert resolve_peer_backend("reference", cpu, "op", "fla", "fla", "pip install zoo[fla]") == "reference"
    with pytest.raises(ValueError, match="backend='fla' needs a CUDA device"):
        resolve_peer_backend("fla", cpu, "op", "fla", "fla", "pip install zoo[fla]")
    with pytest.raises(ValueError, match="choose one of auto, reference, fla"):
        resolve_peer_backend("triton", cpu, "op", "fla", "fla", "pip install zoo[fla]")


def test_peer_backend_names_the_install_command_when_the_package_is_missing(monkeypatch):
    import ops._backend as backend_module
    monkeypatch.setattr(backend_module, "package_importable", lambda name: False)
    monkeypatch.setattr(torch, "device", lambda d: type("FakeDevice", (), {"type": "cuda"})())
    with pytest.raises(ValueError, match=r"optional package 'fla' \(pip install zoo\[fla\]\)"):
        resolve_peer_backend("fla", "cuda", "op", "fla", "fla", "pip install zoo[fla]")
    assert resolve_peer_backend("auto", "cuda", "op", "fla", "fla", "pip install zoo[fla]") == "reference"
