"""Which implementation of an op runs.

``resolve_backend`` is the rule for ops with a kernel of our own: "auto" is our Triton kernel on CUDA and the
reference elsewhere, except where an op's dispatcher knows a faster CPU path (e.g. the selective scan's
compiled C kernel) and takes it before asking here. ``resolve_peer_backend`` is the rule for ops whose only GPU
kernel is a maintained peer's (fla, mamba-ssm): "auto" takes the peer on CUDA when it is installed.
"""
import importlib.util
import os

import torch

BACKENDS = ("auto", "reference", "triton", "cuda")


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def package_importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def resolve_backend(backend: str, device: torch.device, op: str, cuda_package: str | None = None) -> str:
    """Turn a requested backend into the one that will run on ``device``.

    "auto": Triton on CUDA when triton is importable, else the reference. Never the CUDA peer package:
    that path is taken only when asked for by name, because it is optional and not ours to vouch for.
    "triton" on CPU runs only under TRITON_INTERPRET=1 (slow; meant for tests).
    """
    if backend not in BACKENDS:
        raise ValueError(f"{op}: unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    device = torch.device(device)
    if backend == "auto":
        if device.type == "cuda" and triton_importable():
            return "triton"
        return "reference"
    if backend == "triton":
        if not triton_importable():
            raise ValueError(f"{op}: backend='triton' needs the triton package (pip install triton)")
        if device.type != "cuda" and not triton_interpreting():
            raise ValueError(
                f"{op}: backend='triton' on device {device.type!r} needs TRITON_INTERPRET=1 "
                "(the interpreter is for tests); use backend='reference' or 'auto' on CPU"
            )
        return "triton"
    if backend == "cuda":
        if cuda_package is None:
            raise ValueError(f"{op}: has no CUDA-package backend; choose auto, reference or triton")
        if device.type != "cuda":
            raise ValueError(f"{op}: backend='cuda' needs a CUDA device, got {device.type!r}")
        if not package_importable(cuda_package):
            raise ValueError(f"{op}: backend='cuda' needs the optional package {cuda_package!r} (pip install zoo[cuda])")
        return "cuda"
    return "reference"


def resolve_peer_backend(backend: str, device: torch.device, op: str, peer: str, package: str,
                         install: str) -> str:
    """Backends of an op whose only fast GPU path is a maintained peer's kernel (fla, mamba-ssm).

    Offered: "auto", "reference" and ``peer`` (e.g. "fla" or "cuda"). "auto" takes the peer on a CUDA device
    when ``package`` is importable (we have no kernel of our own to prefer), else the reference; naming the
    peer on a CPU, or without the package, is one clear error naming ``install``.
    """
    allowed = ("auto", "reference", peer)
    if backend not in allowed:
        raise ValueError(f"{op}: unknown backend {backend!r}; choose one of {', '.join(allowed)}")
    device = torch.device(device)
    on_gpu_with_peer = device.type == "cuda" and package_importable(package)
    if backend == "auto":
        return peer if on_gpu_with_peer else "reference"
    if backend == peer:
        if device.type != "cuda":
            raise ValueError(f"{op}: backend={peer!r} needs a CUDA device, got {device.type!r}; "
                             "use backend='reference' or 'auto' on CPU")
        if not package_importable(package):
            raise ValueError(f"{op}: backend={peer!r} needs the optional package {package!r} ({install})")
    return backend
