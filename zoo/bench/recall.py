"""MQAR recall against state size: ``python -m zoo.bench recall [--preset cpu|gpu] [--mixers a,b] [--out DIR]``.

zoology's protocol: each mixer in a 2-layer [short_conv, mixer] LM, trained on MQAR and tested on longer
sequences with more pairs, over widths and state knobs (recall_grid.py), with a learning-rate grid of which the
best lr is kept per point, chosen on a validation split (its own seed, the test slices) so that the test split
is only reported. Each run is written to ``OUT/runs/<hash of its config>.json`` as soon as it finishes
and is not rerun; the summary (JSON, CSV) and the plot (accuracy against state size, log x, one line per
mixer) are rebuilt from every run file of the current grid at the end.
"""
import argparse
import concurrent.futures
import hashlib
import json
import logging
import multiprocessing
import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from zoo.bench.choices import registered_mixers, resolve_mixers, resolve_preset
from zoo.bench.environment import describe
from zoo.bench.recall_grid import DEFAULT_KNOBS, N_LAYERS, PAIRING, PRESETS, PUBLIC_PRESETS, Preset, line_name
from zoo.bench.report import format_table, pyplot, write_csv, write_json, write_markdown

# bump when the meaning of a run file changes: old files then no longer match any hash.
# 2: runs also validate (validation split, own seed) and the best lr is chosen on validation, not test
SCHEMA = 2


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("--preset", default="cpu", help=f"one of {', '.join(PUBLIC_PRESETS)} (default cpu)")
    parser.add_argument("--mixers", default=None,
                        help="comma-separated registered mixer names (default: every registered mixer)")
    parser.add_argument("--out", default=None, help="output folder (default bench_results/recall-<preset>)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the preset's accelerator)")
    parser.add_argument("--workers", type=int, default=None,
                        help="runs trained at once in separate processes (default: the preset's; cpu: one per core)")
    parser.add_argument("--stop-after", type=float, default=None, metavar="MINUTES",
                        help="start no new run after this many minutes (runs in flight finish; at least one run "
                             "trains); the same command later goes on where this one stopped")
    from zoo.bench.recall_suite import add_suite_arguments  # the recall suite: --suite, --task NAME, --read-twice
    add_suite_arguments(parser)


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


def run_config(preset: Preset, mixer: str, knobs: dict, d_model: int, lr: float) -> dict:
    """Everything that determines a run's result; its hash names the run file."""
    return {
        "schema": SCHEMA,
        "mixer": mixer, "knobs": knobs, "d_model": d_model, "lr": lr,
        "model": {"d_model": d_model, "n_layers": N_LAYERS, "layers": [PAIRING, {"name": mixer, **knobs}],
                  "mlp": None},
        "task": {"vocab_size": preset.vocab_size, "train_segments": [list(s) for s in preset.train_segments],
                 "test_segments": [list(s) for s in preset.test_segments], "batch_size": preset.batch_size,
                 "seed": preset.seed},
        "trainer": {"max_epochs": preset.max_epochs, "precision": preset.precision, "gradient_clip_val": 1.0},
        "seed": preset.seed,
    }


def run_key(config: dict) -> str:
    return hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


# ---- one run ----------------------------------------------------------------------------------------------------
def _quiet_lightning():
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


def make_datamodule(preset: Preset):
    from zoo.tasks.mqar_datamodule import MQARDataModule
    return MQARDataModule(preset.vocab_size, [list(s) for s in preset.train_segments],
                          [list(s) for s in preset.test_segments], batch_size=preset.batch_size, seed=preset.seed,
                          num_workers=preset.num_workers)


def train_run(config: dict, datamodule, device: str) -> dict:
    """Fit and test one grid run; returns its result row (deterministic for a given config on one device)."""
    import lightning as L
    from zoo.lit import LitLM
    from zoo.model import LM
    from zoo.train import slice_rows

    _quiet_lightning()
    started, cpu_started = time.perf_counter(), time.process_time()
    L.seed_everything(config["seed"], workers=True, verbose=False)
    model = LM(vocab_size=datamodule.vocab_size, **config["model"])
    lit = LitLM(model, datamodule.slice_keys, lr=config["lr"])
    # validation once, after the last epoch: what the lr choice reads (the test split is only reported)
    trainer = L.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, check_val_every_n_epoch=config["trainer"]["max_epochs"],
                        **config["trainer"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"lightning(\.|$)")  # worker-count and similar advice
        trainer.fit(lit, datamodule=datamodule)
        trainer.test(lit, datamodule=datamodule, verbose=False)
    slices = slice_rows(model, datamodule.describe_slices(), lit.test_results)
    longest = max(s["input_seq_len"] for s in slices)
    return {
        "val_mean_accuracy": sum(lit.val_results.values()) / len(lit.val_results),
        "val_slices": lit.val_results,
        "params": model.num_parameters(),
        "state_size": model.state_size(longest),
        "state_size_seq_len": longest,
        "mean_accuracy": sum(s["accuracy"] for s in slices) / len(slices),
        "slices": slices,
        "train_seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,  # all threads: an idle-machine estimate on a shared one
        "threads": torch.get_num_threads(),
    }


# ---- the sweep --------------------------------------------------------------------------------------------------
def sweep(preset: Preset, mixers: list[str], out: Path, device: str, workers: int = 1,
          stop_after_minutes: float | None = None) -> dict:
    """Run every grid run not already on disk (or those that fit in ``stop_after_minutes``), then summarise what
    is on disk. Returns the summary (also written to out); ``runs_left`` > 0 marks a partial sweep."""
    runs, notes = grid_runs(preset, mixers)
    run_dir = out / "runs"
    run_dir.mkdir(parents=True, exist_ok=True)
    pending = [c for c in runs if not (run_dir / f"{run_key(c)}.json").exists()]
    for note in notes:
        print(f"note: {note}")
    workers = max(1, min(workers, len(pending)))
    print(f"recall preset {preset.name}: {len(runs)} runs, {len(runs) - len(pending)} already done, "
          f"{workers} worker(s), writing to {out}")
    trained = 0
    deadline = None if stop_after_minutes is None else time.monotonic() + 60 * stop_after_minutes
    progress = tqdm(total=len(pending), desc="recall runs", unit="run")
    for config, result in _train_all(preset, pending, device, workers, deadline):
        record = {"key": run_key(config), "config": config, "result": result, "device": describe(device)}
        write_json(run_dir / f"{record['key']}.json", record)  # written as it finishes: a restart skips it
        trained += 1
        progress.update()
    progress.close()
    done = [run_dir / f"{run_key(c)}.json" for c in runs]
    records = [json.loads(path.read_text()) for path in done if path.exists()]
    summary = summarise(preset, records, notes, device)
    summary["runs_trained_now"] = trained
    summary["runs_left"] = len(runs) - len(records)
    write_outputs(summary, out)
    return summary


def _train_all(preset: Preset, configs: list[dict], device: str, workers: int, deadline: float | None = None):
    """Yield (config, result) as runs finish: in this process, or in ``workers`` processes of one thread each."""
    if not configs:
        return
    datamodule = make_datamodule(preset) if workers == 1 else None
    yield from run_as_they_finish(configs, lambda config: train_run(config, datamodule, device),
                                  _worker_train, (device,), workers, deadline, _worker_setup, (preset,))


def run_as_they_finish(configs: list[dict], run_here, run_in_worker, worker_args: tuple, workers: int,
                       deadline: float | None, initializer=None, initargs: tuple = ()):
    """Yield (config, result) as runs finish: ``run_here(config)`` in this process when ``workers`` is 1, else
    ``run_in_worker(config, *worker_args)`` in ``workers`` spawned processes of one intra-op thread share each.

    Small models on a CPU use a second core far better as a second run than as a second intra-op thread.
    Past ``deadline`` (time.monotonic), checked as each run finishes, no new run starts.
    """
    past_deadline = lambda: deadline is not None and time.monotonic() > deadline  # noqa: E731
    if workers == 1:
        for config in configs:
            yield config, run_here(config)
            if past_deadline():
                return
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_worker_init,
                                                initargs=(threads, initializer, initargs)) as pool:
        queue = list(configs)
        # one run in flight per worker, the next submitted as one finishes: past the deadline none is submitted
        running = {pool.submit(run_in_worker, config, *worker_args): config for config in queue[:workers]}
        del queue[:workers]
        while running:
            finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in finished:
                yield running.pop(future), future.result()
            while queue and len(running) < workers and not past_deadline():
                config = queue.pop(0)
                running[pool.submit(run_in_worker, config, *worker_args)] = config


def _worker_init(threads: int, initializer, initargs: tuple):
    torch.set_num_threads(threads)
    if initializer is not None:
        initializer(*initargs)


_WORKER_DATA = {}


def _worker_setup(preset: Preset):
    _WORKER_DATA["datamodule"] = make_datamodule(preset)


def _worker_train(config: dict, device: str) -> dict:
    return train_run(config, _WORKER_DATA["datamodule"], device)


def result_columns(record: dict, per_slice: dict) -> dict:
    """The measured columns of a run's row (shared by the MQAR sweep and the suite): sizes, accuracies, time and
    key, then for each slice the fields named in ``per_slice`` (slice field -> column prefix)."""
    result = record["result"]
    row = {name: result[name] for name in ("params", "state_size", "val_mean_accuracy", "mean_accuracy",
                                           "train_seconds")}
    row["key"] = record["key"]
    for s in result["slices"]:
        for field, prefix in per_slice.items():
            row[f"{prefix}_{s['slice']}"] = s[field]
    return row


def mark_best_lr(rows: list[dict], point, flag: str) -> list[dict]:
    """Per ``point(row)`` the row (one lr) with the highest mean validation accuracy, ties to the first lr of the
    grid; sets ``row[flag]`` on every row and returns the chosen ones. Test accuracy plays no part."""
    best: dict[tuple, dict] = {}
    for row in rows:
        key = point(row)
        if key not in best or row["val_mean_accuracy"] > best[key]["val_mean_accuracy"]:
            best[key] = row
    chosen = {row["key"] for row in best.values()}
    for row in rows:
        row[flag] = row["key"] in chosen
    return [r for r in rows if r[flag]]


def flat_row(record: dict) -> dict:
    config = record["config"]
    return {"line": line_name(config["mixer"], config["knobs"]), "mixer": config["mixer"],
            "knobs": json.dumps(config["knobs"], sort_keys=True), "d_model": config["d_model"], "lr": config["lr"],
            **result_columns(record, {"accuracy": "acc", "state_size": "state"})}


def summarise(preset: Preset, records: list[dict], notes: list[str], device: str) -> dict:
    rows = [flat_row(r) for r in records]
    best = mark_best_lr(rows, lambda row: (row["mixer"], row["knobs"], row["d_model"]), "best_lr")
    return {
        "environment": describe(device),
        "preset": asdict(preset),
        "protocol": {"pairing": [PAIRING, "<mixer>"], "n_layers": N_LAYERS,
                     "state_size": f"LM.state_size at the longest test length "
                                   f"({max(s[0] for s in preset.test_segments)}), per slice in state_<slice>",
                     "best_lr": "highest mean validation accuracy (validation split: own seed, the test slices) "
                                "over the lr grid per (mixer, knobs, d_model); test accuracy is only reported"},
        "notes": notes,
        "runs": rows,
        "best": best,
    }


def write_outputs(summary: dict, out: Path):
    write_json(out / "recall.json", summary)
    rows = summary["runs"]
    write_csv(out / "recall.csv", rows)
    plot(summary["best"], out / "recall.png", summary["preset"]["name"])
    shown = sorted(summary["best"], key=lambda r: (r["line"], r["state_size"]))
    columns = ["line", "knobs", "d_model", "lr", "params", "state_size", "mean_accuracy"]
    print(format_table(shown, columns))
    per_slice = [c for c in dict.fromkeys(c for row in shown for c in row) if c.startswith("acc_")]
    write_markdown(out / "recall.md", shown, columns + per_slice, summary["environment"])


def frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The best accuracy reached at or below each state size (points sorted by state size)."""
    best, line = float("-inf"), []
    for state, accuracy in sorted(points):
        best = max(best, accuracy)
        line.append((state, best))
    return line


def plot(best_rows: list[dict], path: Path, preset_name: str):
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


def resolve_device(preset, requested: str | None) -> str:
    """--device, else the preset's accelerator; a CUDA preset on a machine without CUDA exits with one line."""
    device = requested or ("cuda" if preset.accelerator == "gpu" else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: preset {preset.name} trains on CUDA, which is not available here "
                         f"(use --preset cpu, or --device cpu to run it anyway)")
    return device


def run(args) -> int:
    if getattr(args, "suite", False) or getattr(args, "task", None):
        from zoo.bench.recall_suite import run as run_suite
        return run_suite(args)
    try:
        preset = resolve_preset("recall", args.preset, PRESETS, PUBLIC_PRESETS)
        mixers = resolve_mixers(args.mixers.split(",") if args.mixers else None)
    except ValueError as error:
        raise SystemExit(f"error: {error}")
    device = resolve_device(preset, args.device)
    out = Path(args.out or f"bench_results/recall-{preset.name}")
    workers = args.workers or preset.workers or os.cpu_count() or 1
    started = time.perf_counter()
    summary = sweep(preset, mixers, out, device, workers, args.stop_after)
    print(f"{len(summary['runs'])} runs ({summary['runs_trained_now']} trained now) in "
          f"{time.perf_counter() - started:.0f} s; wrote {out / 'recall.json'}, {out / 'recall.csv'}, "
          f"{out / 'recall.png'}, {out / 'recall.md'}")
    if summary["runs_left"]:
        print(f"stopped after --stop-after {args.stop_after:g} min: {summary['runs_left']} runs left, so these files "
              f"are partial; run the same command again to go on")
    return 0
