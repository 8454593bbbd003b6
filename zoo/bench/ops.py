"""One timing harness for every kernel: ``python -m zoo.bench ops [OP ...] --preset gpu``.

Each op folder ``ops/<op>/bench.py`` declares ``cases(preset, device, dtype) -> list[OpCase]``: the shapes, how
to make inputs, the bytes a perfect kernel must move, and the implementations (ours and the peers that are
importable). This module times forward and forward+backward for each, and reports ms, GB/s, the fraction of
the memory-bandwidth floor (bandwidth measured in the same run) and the ratio to the first peer.
"""
import argparse
import importlib
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ops.bench_cases import OpCase, OpImpl  # noqa: F401  (the cases' types, re-exported)
from zoo.bench.environment import describe
from zoo.bench.layer_cases import mingru_layer_case
from zoo.report import format_table, pyplot, write_json, write_markdown
from zoo.bench.timing import median_ms

OPS_WITH_BENCHMARKS = ("selective_scan", "linear_recurrence", "based")
# whole blocks timed beside an op (they need zoo.blocks, which ops/ may not import): op name -> case makers
LAYER_CASES = {"linear_recurrence": (mingru_layer_case,)}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _outputs(result) -> list[torch.Tensor]:
    items = result if isinstance(result, (tuple, list)) else [result]
    return [t for t in items if isinstance(t, torch.Tensor) and t.requires_grad]


def _forward_backward(fn, inputs):
    outs = _outputs(fn(**inputs))
    torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])


def copy_bandwidth(device: torch.device) -> float:
    """Bytes/s of a plain device copy (read + write): the floor every memory-bound kernel is measured against."""
    n = (256 << 20) if device.type == "cuda" else (32 << 20)
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device)
    return 2 * n / (ms * 1e-3)


def measure(case: OpCase, device: torch.device, bandwidth: float, with_backward: bool) -> list[dict]:
    rows = []
    floor_ms = case.floor_bytes / bandwidth * 1e3
    for impl in case.impls:
        inputs = case.make_inputs()
        with torch.no_grad():
            fwd = median_ms(lambda: impl.fn(**inputs), device)
        both = None
        if with_backward and impl.backward:
            both = median_ms(lambda: _forward_backward(impl.fn, inputs), device)
        rows.append({
            "op": case.op, "shape": case.shape, "impl": impl.name, "peer": impl.peer,
            "fwd_ms": fwd, "fwd_bwd_ms": both,
            "fwd_GBps": case.floor_bytes / (fwd * 1e-3) / 1e9,
            "fwd_floor_frac": floor_ms / fwd,
        })
        del inputs
    peers = [r for r in rows if r["peer"]]
    if peers:
        base = peers[0]
        for r in rows:
            r["vs_peer"] = base["impl"]
            r["fwd_speedup"] = base["fwd_ms"] / r["fwd_ms"]
            if r["fwd_bwd_ms"] and base["fwd_bwd_ms"]:
                r["fwd_bwd_speedup"] = base["fwd_bwd_ms"] / r["fwd_bwd_ms"]
    return rows


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("ops", nargs="*", help=f"ops to time (default: all of {', '.join(OPS_WITH_BENCHMARKS)})")
    parser.add_argument("--preset", choices=("cpu", "gpu"), default=None,
                        help="shapes: 'gpu' = the anchor shapes of docs/peers.md, 'cpu' = small ones "
                             "(default: gpu on CUDA, cpu otherwise)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="input dtype (default bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--no-backward", action="store_true", help="time the forward only")
    parser.add_argument("--out", default="bench_results", help="folder for JSON and PNG")


def run(args) -> int:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset = args.preset or ("gpu" if device.type == "cuda" else "cpu")
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    names = args.ops or list(OPS_WITH_BENCHMARKS)
    unknown = [n for n in names if n not in OPS_WITH_BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown op(s) {', '.join(unknown)}; ops with benchmarks: {', '.join(OPS_WITH_BENCHMARKS)}")

    cases = []
    for name in names:
        try:
            module = importlib.import_module(f"ops.{name}.bench")
        except ModuleNotFoundError as error:
            if error.name not in (f"ops.{name}", f"ops.{name}.bench"):
                raise
            print(f"[zoo.bench ops] {name}: no benchmark written yet, skipped")
            continue
        cases += module.cases(preset, device, dtype)
        cases += [make(preset, device, dtype) for make in LAYER_CASES.get(name, ())]
    if not cases:
        raise SystemExit("nothing to time")

    bandwidth = copy_bandwidth(device)
    rows = []
    for case in tqdm(cases, desc="ops", unit="case"):
        rows += measure(case, device, bandwidth, with_backward=not args.no_backward)

    columns = ["op", "shape", "impl", "fwd_ms", "fwd_bwd_ms", "fwd_GBps", "fwd_floor_frac", "fwd_speedup", "fwd_bwd_speedup"]
    environment = describe(device)
    print(f"\ndevice {environment['device_name']}, dtype {dtype}, copy bandwidth {bandwidth / 1e9:.1f} GB/s "
          f"(speedup = peer ms / this ms; floor_frac = ideal ms at copy bandwidth / this ms)")
    print(format_table(rows, columns))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out)
    path = write_json(out / f"ops-{stamp}.json", {
        "environment": environment, "preset": preset, "dtype": str(dtype),
        "copy_bandwidth_Bps": bandwidth, "rows": rows,
    })
    png = plot(rows, out / f"ops-{stamp}.png")
    table = write_markdown(out / f"ops-{stamp}.md", rows, columns, environment)
    print(f"\nwrote {path}, {png} and {table}")
    return 0


def plot(rows: list[dict], path: Path) -> Path:
    plt = pyplot()
    groups = sorted({(r["op"], r["shape"]) for r in rows}, key=str)
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.8), squeeze=False)
    for ax, (op, shape) in zip(axes[0], groups):
        mine = [r for r in rows if (r["op"], r["shape"]) == (op, shape)]
        x = range(len(mine))
        ax.bar([i - 0.2 for i in x], [r["fwd_ms"] for r in mine], 0.4, label="fwd")
        ax.bar([i + 0.2 for i in x], [r["fwd_bwd_ms"] or 0 for r in mine], 0.4, label="fwd+bwd")
        ax.set_xticks(list(x), [r["impl"] for r in mine], rotation=30, ha="right")
        ax.set_yscale("log")
        ax.set_title(f"{op}\n{shape}", fontsize=9)
        ax.set_ylabel("ms (log)")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
