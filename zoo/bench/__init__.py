"""Benchmarks: ``python -m zoo.bench ops|speed|recall``. Every result carries its device, versions and command."""
