"""What every result file records about where and how it was made."""
import importlib.metadata
import platform
import sys
import time

import torch


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe(device: torch.device) -> dict:
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return {
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "triton": _version("triton"),
        "mamba_ssm": _version("mamba-ssm"),
        "fla": _version("flash-linear-attention") or _version("fla-core"),
        "python": platform.python_version(),
        "command": " ".join(sys.argv),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
