"""The new mixers' ops whose GPU path is a peer's kernel (fla, mamba-ssm), for the GPU proof: their inputs at a
given size, the real-size check's tolerance, and a timing of each against its reference.

    python -m zoo.bench.gpu_mixer_ops --out DIR       (on a GPU; what is missing is one "skipped" line)

Each op is referenced by name (``ops.<name>``) with its peer backend, as issues 21 and 22 declare them; an op
that this checkout does not have yet, or whose package is not installed, is skipped with one line, never a
crash. tests/ops/test_peer_kernels_at_real_sizes.py checks each against its reference at real sizes.

The peers autotune every kernel over up to 60 configurations, cold, which takes minutes per op: far beyond the
proof's budget. With ``ZOO_PEER_AUTOTUNE_CONFIGS=n`` (the proof sets 1) each peer kernel keeps only its first n
configurations, so the proof checks correctness at real sizes and its timings of these kernels say "untuned";
the later ``mixers`` phase times them with the peers' full autotuning.
"""
import argparse
import importlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

AUTOTUNE_VARIABLE = "ZOO_PEER_AUTOTUNE_CONFIGS"
PEER_MODULES = ("fla.", "mamba_ssm.")


@dataclass(frozen=True)
class MixerOp:
    name: str              # ops.<name>
    peer: str              # its peer backend: "fla" or "cuda"
    package: str           # what that backend imports
    kernel: str            # the peer's function, for tables
    make_inputs: Callable  # (batch, length, device, dtype, seed) -> dict of leaf tensors
    scale: float = 4.0     # tolerance scale in bf16: the peers keep chunk intermediates in bf16


def _generator(device, seed):
    import torch
    return torch.Generator(device).manual_seed(seed)


def _qkv(batch, length, heads, key_dim, value_dim, device, dtype, seed, normalise_keys=False):
    import torch
    import torch.nn.functional as F
    g = _generator(device, seed)
    q = torch.randn(batch, length, heads, key_dim, device=device, generator=g)
    k = torch.randn(batch, length, heads, key_dim, device=device, generator=g)
    v = torch.randn(batch, length, heads, value_dim, device=device, generator=g)
    if normalise_keys:  # the delta rule's blocks L2-normalise q and k before the op
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    state = torch.randn(batch, heads, key_dim, value_dim, device=device, generator=g) * 0.1
    return g, dict(q=q.to(dtype), k=k.to(dtype), v=v.to(dtype)), state


def gla_inputs(batch, length, device, dtype, seed=0):
    import torch
    import torch.nn.functional as F
    g, inputs, state = _qkv(batch, length, 4, 64, 64, device, dtype, seed)
    decay = F.logsigmoid(torch.randn(batch, length, 4, 64, device=device, generator=g) + 3) / 16
    return dict(inputs, g=decay.to(dtype), initial_state=state)


def delta_rule_inputs(batch, length, device, dtype, seed=0):
    import torch
    g, inputs, state = _qkv(batch, length, 4, 64, 64, device, dtype, seed, normalise_keys=True)
    beta = torch.rand(batch, length, 4, device=device, generator=g)
    return dict(inputs, beta=beta.to(dtype), initial_state=state)


def gated_delta_rule_inputs(batch, length, device, dtype, seed=0):
    import torch
    import torch.nn.functional as F
    inputs = delta_rule_inputs(batch, length, device, dtype, seed)
    decay = F.logsigmoid(torch.randn(batch, length, 4, device=device, generator=_generator(device, seed + 1)) + 4)
    return dict(inputs, g=decay.to(dtype))


def dplr_delta_rule_inputs(batch, length, device, dtype, seed=0):
    """RWKV-7's use: a = -kappa_hat, b = kappa_hat * in-context learning rate, gk the log decay per key channel."""
    import torch
    import torch.nn.functional as F
    g, inputs, state = _qkv(batch, length, 4, 64, 64, device, dtype, seed)
    kappa = F.normalize(torch.randn(batch, length, 4, 64, device=device, generator=g), dim=-1)
    rate = torch.rand(batch, length, 4, 64, device=device, generator=g)
    decay = -torch.exp(-0.5 + 0.5 * torch.randn(batch, length, 4, 64, device=device, generator=g)) / 8
    return dict(inputs, a=(-kappa).to(dtype), b=(kappa * rate).to(dtype), gk=decay.to(dtype), initial_state=state)


def ssd_inputs(batch, length, device, dtype, seed=0):
    """Mamba-2's layout: x (b, l, h, p), dt (b, l, h), A (h,), B and C (b, l, g, n), one group, states (b, h, p, n)."""
    import torch
    heads, head_dim, groups, state_dim = 8, 64, 1, 128
    g = _generator(device, seed)
    randn = lambda *shape: torch.randn(*shape, device=device, generator=g)  # noqa: E731
    return dict(x=randn(batch, length, heads, head_dim).to(dtype), dt=(randn(batch, length, heads) * 0.5 - 3).to(dtype),
                A=-torch.rand(heads, device=device, generator=g) * 4 - 0.5,
                B=randn(batch, length, groups, state_dim).to(dtype), C=randn(batch, length, groups, state_dim).to(dtype),
                D=randn(heads), z=randn(batch, length, heads, head_dim).to(dtype), dt_bias=randn(heads) * 0.1,
                initial_states=randn(batch, heads, head_dim, state_dim) * 0.1)


MIXER_OPS = {op.name: op for op in (
    MixerOp("gla", "fla", "fla", "chunk_gla", gla_inputs),
    MixerOp("delta_rule", "fla", "fla", "chunk_delta_rule", delta_rule_inputs),
    MixerOp("gated_delta_rule", "fla", "fla", "chunk_gated_delta_rule", gated_delta_rule_inputs),
    MixerOp("dplr_delta_rule", "fla", "fla", "chunk_dplr_delta_rule", dplr_delta_rule_inputs),
    MixerOp("ssd", "cuda", "mamba_ssm", "mamba_chunk_scan_combined", ssd_inputs),
)}


def call(op: MixerOp, backend: str, inputs: dict):
    """ops.<name> on ``inputs`` with ``backend``; returns (output, final state)."""
    import ops
    function = getattr(ops, op.name)
    if op.name == "ssd":
        return function(**inputs, chunk_size=256, dt_softplus=True, return_final_states=True, backend=backend)
    return function(**inputs, output_final_state=True, backend=backend)


def unavailable(op: MixerOp) -> str | None:
    """Why ``op`` cannot run its peer here (one line), or None."""
    import ops
    if not hasattr(ops, op.name):
        return f"skipped: not installed (ops.{op.name} is not in this checkout)"
    try:
        importlib.import_module(op.package)
    except Exception as error:  # absent, or a compiled part missing (mamba_ssm without its CUDA build)
        return f"skipped: not installed ({op.package}: {type(error).__name__}: {error})"
    return None


def limit_peer_autotune(configs: int | None = None):
    """Keep only the first ``configs`` autotune configurations of every peer kernel (fla, mamba-ssm), from
    ``ZOO_PEER_AUTOTUNE_CONFIGS`` when not given; no-op when neither is set. Our own kernels keep theirs."""
    configs = configs or int(os.environ.get(AUTOTUNE_VARIABLE, "0") or 0)
    if configs <= 0:
        return
    from triton.runtime.autotuner import Autotuner
    if getattr(Autotuner.run, "_zoo_limit", None) == configs:
        return
    original = getattr(Autotuner.run, "_zoo_original", Autotuner.run)

    def run(self, *args, **kwargs):
        module = getattr(self.base_fn, "__module__", "") or ""
        if module.startswith(PEER_MODULES) and len(self.configs) > configs:
            self.configs = self.configs[:configs]
        return original(self, *args, **kwargs)

    run._zoo_limit, run._zoo_original = configs, original
    Autotuner.run = run


# ---- the timing ---------------------------------------------------------------------------------------------------
BENCH_SHAPE = dict(batch=8, length=2048)


def _floor_bytes(inputs: dict) -> int:
    """Every input read once and the output written once (the size of the first input stands in for it)."""
    first = next(iter(inputs.values()))
    return sum(t.numel() * t.element_size() for t in inputs.values()) + first.numel() * first.element_size()


def bench(out: Path, device=None) -> list[dict]:
    import torch

    from zoo.bench.ops import copy_bandwidth
    from zoo.bench.timing import median_ms
    limit_peer_autotune()
    device = torch.device(device or "cuda")
    bandwidth = copy_bandwidth(device)
    tuned = "untuned: first config only" if os.environ.get(AUTOTUNE_VARIABLE) else "autotuned"
    rows = []
    for op in MIXER_OPS.values():
        why = unavailable(op)
        if why:
            print(f"[gpu_mixer_ops] {op.name}: {why}", flush=True)
            rows.append({"op": op.name, "impl": f"{op.peer} {op.kernel}", "status": why})
            _write(out, bandwidth, rows)
            continue
        inputs = op.make_inputs(**BENCH_SHAPE, device=device, dtype=torch.bfloat16)
        floor_ms = _floor_bytes(inputs) / bandwidth * 1e3
        for backend, label in ((op.peer, f"{op.peer} {op.kernel} ({tuned})"), ("reference", "reference")):
            leaves = {k: v.detach().clone().requires_grad_(v.is_floating_point()) for k, v in inputs.items()}
            row = {"op": op.name, "shape": f"B{BENCH_SHAPE['batch']} T{BENCH_SHAPE['length']}", "impl": label}
            try:
                with torch.no_grad():
                    row["fwd_ms"] = median_ms(lambda: call(op, backend, leaves), device)

                def both():
                    output, _ = call(op, backend, leaves)
                    output.float().sum().backward()
                row["fwd_bwd_ms"] = median_ms(both, device)
                row["fwd_floor_frac"] = floor_ms / row["fwd_ms"]
            except Exception as error:  # one op's failure is a row, not the end of the table
                row["status"] = f"failed: {type(error).__name__}: {str(error)[:200]}"
            rows.append(row)
            print(f"[gpu_mixer_ops] {row}", flush=True)
            _write(out, bandwidth, rows)
    return rows


def _write(out: Path, bandwidth: float, rows: list[dict]):
    """After every row, so a case stopped at its limit keeps what it measured."""
    (out / "mixer-ops.json").write_text(json.dumps({"copy_bandwidth_Bps": bandwidth, "rows": rows}, indent=2))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.bench.gpu_mixer_ops", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for mixer-ops.json")
    args = parser.parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        raise SystemExit("error: zoo.bench.gpu_mixer_ops times peer GPU kernels and needs a CUDA GPU")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = bench(out)
    print(f"{len(rows)} rows in {time.perf_counter() - started:.0f} s; wrote {out / 'mixer-ops.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
