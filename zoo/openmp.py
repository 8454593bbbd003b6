"""OpenMP's busy-wait shortened for the command-line entry points (train.py, ``python -m zoo.bench``).

libgomp, torch's OpenMP runtime on Linux, keeps each worker spinning after a parallel region before it sleeps
(300,000 spins by default: milliseconds of a core). Co4's compiled CPU kernels run their batch slices on Python
threads (ops/co4/cpu_mix.py), so with as many torch threads as cores a spinning worker holds the core a slice
needs: `python train.py model=co4` took 111 s with the default and 80 s with 10,000 spins on a 2-core machine,
while `model=attention` took the same with either (29-30 s; docs/co4.md). libgomp reads its settings once, when
torch is first imported: call this before that. A spin count or wait policy the user set is left as it is.
"""
import os

SPIN_COUNT = "10000"


def shorten_openmp_busy_wait():
    if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
