"""Tests of the compiled CPU kernels (C, built at first use by ops/_native.py) need a C compiler. Without one they
skip, unless ZOO_REQUIRE_NATIVE=1 (set by CI): then a kernel that does not build is a failure, so CI cannot pass
with a CPU kernel untested."""
import os

import pytest


def skip_or_fail_without_native(reason: str):
    if os.environ.get("ZOO_REQUIRE_NATIVE") == "1":
        pytest.fail(reason + "; ZOO_REQUIRE_NATIVE=1 requires it", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_kernel(module, what: str):
    """Skip (or, under ZOO_REQUIRE_NATIVE=1, fail) unless ``module``'s compiled kernel builds here; ``module`` is a
    kernel wrapper with ``available()`` and ``unavailable_reason()`` (ops/_native.NativeKernel's)."""
    if not module.available():
        skip_or_fail_without_native(f"{what} is unavailable: {module.unavailable_reason()}")


def spy_on(monkeypatch, module, name: str) -> list:
    """Wrap ``module.name`` (a kernel entry point) so that each call is recorded and then runs as before; returns
    the records, one a call, each the call's keyword arguments: tests count them to see which backend reached the
    kernel."""
    calls = []
    real = getattr(module, name)

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls
