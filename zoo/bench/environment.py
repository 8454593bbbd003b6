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


_command: str | None = None


def set_command(command: str):
    """Record the command a benchmark was asked to run (``zoo.bench.main`` does, also when called in-process)."""
    global _command
    _command = command


def command_line() -> str:
    """The command set by ``set_command``, else how this process was started, as one would type it."""
    if _command:
        return _command
    main = sys.modules.get("__main__")
    module = getattr(getattr(main, "__spec__", None), "name", None)
    if module:
        launcher = "python -m " + module.removesuffix(".__main__")
        return " ".join([launcher] + sys.argv[1:])
    return " ".join(["python"] + sys.argv)


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
        "command": command_line(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
