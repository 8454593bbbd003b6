"""Wall-clock timing that is honest on both CPU and GPU: warm up, synchronise, take the median."""
import statistics
import time
from typing import Callable

import torch


def synchronize(device: torch.device):
    """Wait for queued GPU work (a no-op on CPU), so a wall-clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], object], device: torch.device, warmup: int = 3, reps: int = 10,
              max_seconds: float = 10.0) -> float:
    """Median milliseconds of ``fn()``; on CUDA uses triton.testing.do_bench (it flushes L2) when present."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            from triton.testing import do_bench
            return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
        except ImportError:
            pass
    for _ in range(warmup):
        fn()
    synchronize(device)
    times, started = [], time.perf_counter()
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
        if time.perf_counter() - started > max_seconds:
            break
    return statistics.median(times)


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak CUDA memory allocated while running ``fn`` once (None on CPU, where torch does not track it)."""
    device = torch.device(device)
    if device.type != "cuda":
        fn()
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)
