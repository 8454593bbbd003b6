"""The GPU proof's short speed table: training, prefill and decode tokens/s of every registered mixer against
attention at L 2k and 8k (16k tokens per training step), one mixer at a time.

    python -m zoo.bench.gpu_speed --out DIR [--mixers a,b]

The LM and the measurements are ``zoo.bench speed``'s (d_model 768, 4 layers, no MLP, bf16, attention as the
reference), at two lengths instead of six. Paced for a time limit: with ``ZOO_CASE_DEADLINE`` set (the GPU check
sets it) a mixer is started only while ``PER_MIXER_S`` remain, and the rest are recorded as skipped. The table
is written after every mixer, so a stop from outside keeps the mixers already done; a mixer that fails is a row
with its error, and the others go on.
"""
import argparse
import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

PER_MIXER_S = 10.0      # one mixer at two points: build, compile what the kernel tests did not, train/prefill/decode
COLUMNS = ["mixer", "batch", "seq_len", "train_tok_s", "train_vs_attention", "decode_tok_s", "decode_vs_attention",
           "prefill_tok_s", "train_peak_bytes", "state_size", "oom", "status"]


def proof_preset():
    from zoo.bench.speed import GPU
    return replace(GPU, name="proof", seq_lens=(2048, 8192), batch_sizes=(), tokens_per_step=16384, decode_steps=32)


def seconds_left() -> float:
    deadline = os.environ.get("ZOO_CASE_DEADLINE")
    return float("inf") if not deadline else float(deadline) - time.time()


def measure_all(mixers: list[str], out: Path, per_mixer_s: float = PER_MIXER_S, device="cuda",
                preset=None) -> list[dict]:
    import torch

    from zoo.bench.environment import describe
    from zoo.report import format_table, write_markdown
    from zoo.bench.speed import REFERENCE, add_ratios, benchmark
    preset = preset or proof_preset()
    device = torch.device(device)
    environment = describe(device)
    rows: list[dict] = []
    order = [REFERENCE] + [m for m in mixers if m != REFERENCE]
    for mixer in order:
        if seconds_left() < per_mixer_s:
            rows.append({"mixer": mixer, "status": f"skipped: {max(seconds_left(), 0):.0f} s left of the step"})
        else:
            started = time.perf_counter()
            try:
                rows += [dict(row, status="ok") for row in benchmark(preset, [mixer], device)]
            except Exception as error:  # one mixer's failure is a row: the table goes on
                rows.append({"mixer": mixer, "status": f"failed: {type(error).__name__}: {str(error)[:200]}"})
            print(f"[gpu_speed] {mixer}: {time.perf_counter() - started:.1f} s", flush=True)
            torch.cuda.empty_cache()
        add_ratios([r for r in rows if r.get("status") == "ok"])
        (out / "speed.json").write_text(json.dumps({"environment": environment, "preset": asdict(preset),
                                                    "reference": REFERENCE, "rows": rows}, indent=2, default=str))
        write_markdown(out / "speed.md", rows, COLUMNS, environment)
    print(format_table(rows, COLUMNS))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.bench.gpu_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for speed.json and speed.md")
    parser.add_argument("--mixers", default=None, help="comma-separated registered mixers (default: all)")
    args = parser.parse_args(argv)
    import torch

    from zoo.bench.choices import resolve_mixers
    if not torch.cuda.is_available():
        raise SystemExit("error: zoo.bench.gpu_speed measures on a CUDA GPU; use `zoo.bench speed --preset cpu` here")
    try:
        mixers = resolve_mixers(args.mixers.split(",") if args.mixers else None)
    except ValueError as error:
        raise SystemExit(f"error: {error}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    measure_all(mixers, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
