"""Compile a small C source with the system C compiler at first use and load it with ctypes (no build step).

The way torch.compile and Triton also build their CPU-side code: nothing is compiled at install time, a missing
or failing compiler is not an error (``load`` returns None and ``why_unavailable`` says why, so callers fall
back to PyTorch code), and a built library is cached on disk, keyed by the source, the flags and the CPU, so
later processes load it in milliseconds. The compiler is ``$CC`` or the first of cc, gcc, clang on PATH; the
cache is ``$ZOO_NATIVE_CACHE`` or ``~/.cache/zoo-native``; ``ZOO_NATIVE=0`` turns compiled paths off.

Compiled with -O3 -ffast-math -march=native, but linked without -ffast-math: linking with it would add GCC's
crtfastmath.o, which sets flush-to-zero for the whole process when the library loads.
"""
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

COMPILE_FLAGS = ("-O3", "-ffast-math", "-march=native", "-fPIC", "-std=c11")
_lock = threading.Lock()
_loaded: dict = {}           # (source path, defines) -> ctypes.CDLL, or the reason it is unavailable (str)


def enabled() -> bool:
    return os.environ.get("ZOO_NATIVE", "1") != "0"


def _compiler() -> str | None:
    names = [os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc", "clang"]
    return next((path for path in map(shutil.which, names) if path), None)


def _cpu_signature() -> str:
    """What -march=native depends on: the CPU's model and feature flags (a shared cache may serve several hosts)."""
    text = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            text += "".join(line for line in f.read().splitlines(keepends=True)[:40]
                            if line.startswith(("model name", "flags", "Features")))
    except OSError:
        pass
    return text


def _cache_dir() -> Path:
    return Path(os.environ.get("ZOO_NATIVE_CACHE") or Path.home() / ".cache" / "zoo-native")


def _build(source: Path, defines: dict, compiler: str) -> Path:
    flags = list(COMPILE_FLAGS) + [f"-D{k}={v}" for k, v in sorted(defines.items())]
    key = hashlib.sha256("\0".join([source.read_text(), compiler, *flags, _cpu_signature()]).encode()).hexdigest()
    target = _cache_dir() / f"{source.stem}-{key[:20]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        obj, lib = Path(tmp) / "kernel.o", Path(tmp) / "kernel.so"
        for command in ([compiler, *flags, "-c", str(source), "-o", str(obj)],
                        [compiler, "-shared", str(obj), "-o", str(lib), "-lm"]):
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"{' '.join(command)} failed: {(done.stderr or done.stdout).strip()[-500:]}")
        os.replace(lib, target)  # atomic: a concurrent process sees the whole library or none
    return target


def load(source: Path, **defines) -> ctypes.CDLL | None:
    """The compiled library for ``source`` with these -D defines, or None when it cannot be had here."""
    if not enabled():
        return None
    key = (str(source), tuple(sorted(defines.items())))
    with _lock:
        if key not in _loaded:
            compiler = _compiler()
            if compiler is None:
                _loaded[key] = "no C compiler found (set CC, or install cc/gcc/clang)"
            else:
                try:
                    _loaded[key] = ctypes.CDLL(str(_build(source, defines, compiler)))
                except (OSError, RuntimeError) as error:
                    _loaded[key] = f"building {source.name} failed: {error}"
        found = _loaded[key]
    return None if isinstance(found, str) else found


def why_unavailable(source: Path, **defines) -> str | None:
    """None if ``load`` succeeded for these arguments, else the reason it did not."""
    if not enabled():
        return "turned off by ZOO_NATIVE=0"
    load(source, **defines)
    found = _loaded[(str(source), tuple(sorted(defines.items())))]
    return found if isinstance(found, str) else None


def pointer(tensor) -> int | None:
    """A tensor's data address for a ctypes call; None (NULL in C) for an optional argument left out."""
    return None if tensor is None else tensor.data_ptr()


class NativeKernel:
    """One C source, compiled at first use by ``load``, with its functions' ctypes signatures set once per library.

    ``signatures`` maps each exported function's name to (argtypes, restype); ``defines`` are -D flags every build
    of the source gets. ``library``, ``available`` and ``unavailable_reason`` take further defines for sources built
    in several variants (a state size, a floating type): each variant is its own library, typed at its first load.
    """

    def __init__(self, source: Path, signatures: dict, **defines):
        self.source, self.signatures, self.defines = Path(source), signatures, defines
        self._typed: set = set()   # the variants (sorted defines) whose functions have their signatures

    def library(self, **variant) -> ctypes.CDLL | None:
        defines = {**self.defines, **variant}
        lib = load(self.source, **defines)
        key = tuple(sorted(defines.items()))
        if lib is not None and key not in self._typed:
            with _lock:   # typing twice is harmless, but a half-typed function must not be called
                for name, (argtypes, restype) in self.signatures.items():
                    function = getattr(lib, name)
                    function.argtypes, function.restype = argtypes, restype
                self._typed.add(key)
        return lib

    def available(self, **variant) -> bool:
        return self.library(**variant) is not None

    def unavailable_reason(self, **variant) -> str | None:
        return why_unavailable(self.source, **{**self.defines, **variant})
