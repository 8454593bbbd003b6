"""MQAR recall against state size: ``python -m zoo.bench recall [--preset cpu|gpu] [--mixers a,b] [--out DIR]``.

zoology's protocol: each mixer in a 2-layer [short_conv, mixer] LM, trained on MQAR and tested on longer
sequences with more pairs, over widths and state knobs (recall_grid.py), with a learning-rate grid of which the
best lr is kept per point, chosen on a validation split (its own seed, the test slices) so that the test split
is only reported. Each run is written to ``OUT/runs/<hash of its config>.json`` as soon as it finishes
and is not rerun; the summary (JSON, CSV) and the plot (accuracy against state size, log x, one line per
mixer) are rebuilt from every run file of the current grid at the end.
"""
import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from zoo.bench import recall_suite
from zoo.bench.choices import registered_mixers, resolve_mixers, resolve_preset
from zoo.bench.executors import add_executor_arguments, executor_from_args
from zoo.bench.recall_grid import DEFAULT_KNOBS, N_LAYERS, PAIRING, PRESETS, PUBLIC_PRESETS, Preset, line_name
from zoo.bench.recall_runs import (chance_level, result_columns, resolve_device, run_key, summarise,
                                   train_and_score, write_outputs)
from zoo.report import pyplot
from zoo.bench.sweep import Outcome, RunSpec, Sweep, report_stopped, run_sweep

# bump when the meaning of a run file changes: old files then no longer match any hash.
# 2: runs also validate (validation split, own seed) and the best lr is chosen on validation, not test
SCHEMA = 2


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("--preset", default="cpu", help=f"one of {', '.join(PUBLIC_PRESETS)} (default cpu)")
    parser.add_argument("--mixers", default=None,
                        help="comma-separated registered mixer names (default: every registered mixer)")
    parser.add_argument("--out", default=None, help="output folder (default bench_results/recall-<preset>)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the preset's accelerator)")
    add_executor_arguments(parser, "the preset's; cpu: one per core")
    recall_suite.add_suite_arguments(parser)  # the recall suite: --suite, --task NAME, --read-twice, --epochs


# ---- the grid -------------------------------------------------------------------------------------------------
def grid_runs(preset: Preset, mixers: list[str]) -> tuple[list[dict], list[str]]:
    """Every run of the sweep as a plain config dict, and notes on names skipped or defaulted."""
    notes = [f"{name}: not registered in this checkout, skipped" for name in preset.knobs if name not in
             registered_mixers()]
    runs = []
    for mixer in mixers:
        settings = preset.knobs.get(mixer)
        if settings is None:
            notes.append(f"{mixer}: no knobs declared for it, swept over d_model with default hyperparameters")
            settings = DEFAULT_KNOBS
        for setting in settings:
            knobs = {k: v for k, v in setting.items() if k != "d_models"}
            for d_model in setting.get("d_models", preset.d_models):
                for lr in preset.lrs:
                    runs.append(run_config(preset, mixer, knobs, d_model, lr))
    return runs, notes


def grid_task(preset: Preset) -> dict:
    return {"vocab_size": preset.vocab_size, "train_segments": [list(s) for s in preset.train_segments],
            "test_segments": [list(s) for s in preset.test_segments], "batch_size": preset.batch_size,
            "seed": preset.seed}


def run_config(preset: Preset, mixer: str, knobs: dict, d_model: int, lr: float) -> dict:
    """Everything that determines a run's result; its hash names the run file (keep it stable: committed run
    files are found by it)."""
    return {
        "schema": SCHEMA,
        "mixer": mixer, "knobs": knobs, "d_model": d_model, "lr": lr,
        "model": {"d_model": d_model, "n_layers": N_LAYERS, "layers": [PAIRING, {"name": mixer, **knobs}],
                  "mlp": None},
        "task": grid_task(preset),
        "trainer": {"max_epochs": preset.max_epochs, "precision": preset.precision, "gradient_clip_val": 1.0},
        "seed": preset.seed,
    }


# ---- the sweep --------------------------------------------------------------------------------------------------
def make_sweep(preset: Preset, mixers: list[str], out: Path, device: str) -> Sweep:
    runs, notes = grid_runs(preset, mixers)
    for note in notes:
        print(f"note: {note}")
    specs = [RunSpec(run_key(config), config, device) for config in runs]
    report = lambda outcome: write_report(preset, outcome, notes, out, device)  # noqa: E731
    return Sweep(f"recall preset {preset.name}", specs, train_and_score, out, report)


def flat_row(record: dict) -> dict:
    config = record["config"]
    return {"line": line_name(config["mixer"], config["knobs"]), "mixer": config["mixer"],
            "knobs": json.dumps(config["knobs"], sort_keys=True), "d_model": config["d_model"], "lr": config["lr"],
            **result_columns(record, {"accuracy": "acc", "state_size": "state"})}


def write_report(preset: Preset, outcome: Outcome, notes: list[str], out: Path, device: str) -> dict:
    """recall.json, .csv, .md and .png from every finished run of the grid; returns the summary."""
    summary = summarise(
        outcome.records, flat_row, lambda row: (row["mixer"], row["knobs"], row["d_model"]), "best_lr", device,
        preset=asdict(preset),
        protocol={"pairing": [PAIRING, "<mixer>"], "n_layers": N_LAYERS,
                  "state_size": f"LM.state_size at the longest test length "
                                f"({max(s[0] for s in preset.test_segments)}), per slice in state_<slice>",
                  "best_lr": "highest mean validation accuracy (validation split: own seed, the test slices) "
                             "over the lr grid per (mixer, knobs, d_model); test accuracy is only reported",
                  "chance": "one over the distinct answer tokens of the test split"},
        chance=chance_level(grid_task(preset)), notes=notes, runs_trained_now=outcome.trained_now, runs_left=outcome.left)
    shown = sorted(summary["best"], key=lambda r: (r["line"], r["state_size"]))
    columns = ["line", "knobs", "d_model", "lr", "params", "state_size", "mean_accuracy"]
    per_slice = [c for c in dict.fromkeys(c for row in shown for c in row) if c.startswith("acc_")]
    write_outputs(summary, out, "recall", shown, columns + per_slice,
                  lambda path: plot(summary["best"], path, preset.name, summary["chance"]))
    return summary


def frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The best accuracy reached at or below each state size (points sorted by state size)."""
    best, line = float("-inf"), []
    for state, accuracy in sorted(points):
        best = max(best, accuracy)
        line.append((state, best))
    return line


def plot(best_rows: list[dict], path: Path, preset_name: str, chance: float | None = None):
    """Accuracy against state size, one colour per mixer: every point (best lr) as a marker, the mixer's
    frontier (best accuracy at or below each state size) as the line. Left: mean over slices; right: hardest."""
    plt = pyplot()
    if not best_rows:
        return
    hardest = [c for c in best_rows[0] if c.startswith("acc_")][-1]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True)
    lines = sorted({r["line"] for r in best_rows})
    for ax, column, title in ((axes[0], "mean_accuracy", "mean over test slices"),
                              (axes[1], hardest, f"hardest slice ({hardest[4:]})")):
        for i, line in enumerate(lines):
            points = [(r["state_size"], r[column]) for r in best_rows if r["line"] == line]
            ax.scatter(*zip(*points), color=f"C{i}", alpha=0.45, s=22)
            ax.plot(*zip(*frontier(points)), color=f"C{i}", marker="o", markersize=4, label=line)
        if chance is not None:
            ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({chance:.3g})")
        ax.set_xscale("log")
        ax.set_xlabel("state size (numbers per sequence at the longest test length)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"MQAR recall against state size: [short_conv, mixer], best lr per point, line = frontier "
                 f"(preset {preset_name})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args) -> int:
    if getattr(args, "suite", False) or getattr(args, "task", None):
        return recall_suite.run(args)
    try:
        preset = resolve_preset("recall", args.preset, PRESETS, PUBLIC_PRESETS)
        mixers = resolve_mixers(args.mixers.split(",") if args.mixers else None)
    except ValueError as error:
        raise SystemExit(f"error: {error}")
    device = resolve_device(preset, args.device)
    out = Path(args.out or f"bench_results/recall-{preset.name}")
    executor = executor_from_args(args, out, preset.workers)
    started = time.perf_counter()
    outcome = run_sweep(make_sweep(preset, mixers, out, device), executor, args.stop_after)
    print(f"{len(outcome.records)} runs ({outcome.trained_now} trained now) in {time.perf_counter() - started:.0f} s; "
          f"wrote {', '.join(str(out / f'recall.{suffix}') for suffix in ('json', 'csv', 'png', 'md'))}")
    return report_stopped(outcome, args.stop_after)
