"""The recall suite: ``python -m zoo.bench recall --suite [--task a,b] [--mixers lines] [--read-twice off|on|both]``.

Every line (a mixer at matched state, recall_suite_grid.py) in zoology's [short_conv, mixer] LM on every task of
the suite, each (task, line, read_twice) at every lr of the preset, the lr chosen on the validation split and
the test split scored once. Runs are cached like the MQAR sweep's (``OUT/runs/<hash of the config>.json``,
written as each finishes, never rerun), so a stopped suite resumes and a new line trains only its own runs.
Outputs: ``suite.json``, ``suite.csv`` (every run, per-slice validation and test accuracy, state size),
``suite.md`` (the table: one row per line and read-twice setting, one column per task) and ``suite.png`` (the
same as a grid).
"""
import argparse
import json
import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from zoo.bench.choices import resolve_preset
from zoo.bench.environment import describe
from zoo.bench.recall import (_quiet_lightning, mark_best_lr, resolve_device, result_columns,
                               run_as_they_finish, run_key)
from zoo.bench.recall_suite_grid import N_LAYERS, PAIRING, PUBLIC_SUITE_PRESETS, SUITE_PRESETS, SuitePreset
from zoo.bench.report import format_table, pyplot, write_csv, write_json, write_markdown

SCHEMA = 1
READ_TWICE = {"off": (False,), "on": (True,), "both": (False, True)}


def add_suite_arguments(parser: argparse.ArgumentParser):
    """The suite's options of ``python -m zoo.bench recall`` (--preset, --mixers, --out, --device, --workers and
    --stop-after are shared with the MQAR sweep)."""
    parser.add_argument("--suite", action="store_true",
                        help="run the recall suite (every task, every line at matched state) instead of the MQAR sweep")
    parser.add_argument("--task", default=None,
                        help="suite tasks to run, comma-separated (implies --suite; default: all of the preset's)")
    parser.add_argument("--read-twice", default="off", choices=tuple(READ_TWICE),
                        help="suite: JRT-Prompt (context read twice before the queries): off, on, or both (default off)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="suite: training epochs per run instead of the preset's (recorded in each run's config)")


def resolve_selection(preset: SuitePreset, tasks: list[str] | None, lines: list[str] | None):
    """The requested task and line names, in order; ValueError naming unknown ones and listing the known."""
    from zoo.tasks import TASKS
    tasks = list(preset.tasks) if tasks is None else list(dict.fromkeys(tasks))
    unknown = [t for t in tasks if t not in preset.tasks]
    if unknown:
        known = sorted(TASKS)
        hint = [t for t in unknown if t in TASKS]
        raise ValueError(f"unknown suite task(s) {', '.join(map(repr, unknown))}"
                         + (f" (registered, but without settings in preset {preset.name!r})" if hint else "")
                         + f"; suite tasks: {', '.join(preset.tasks)} (registered tasks: {', '.join(known)})")
    lines = list(preset.default_lines) if lines is None else list(dict.fromkeys(lines))
    unknown = [line for line in lines if line not in preset.lines]
    if unknown:
        raise ValueError(f"unknown suite line(s) {', '.join(map(repr, unknown))}; lines: {', '.join(preset.lines)}")
    return tasks, lines


def suite_runs(preset: SuitePreset, tasks: list[str], lines: list[str], read_twice: tuple,
               epochs: int | None = None) -> list[dict]:
    return [run_config(preset, task, line, lr, twice, epochs)
            for task in tasks for line in lines for twice in read_twice for lr in preset.lrs]


def run_config(preset: SuitePreset, task: str, line: str, lr: float, read_twice: bool, epochs: int | None) -> dict:
    """Everything that determines a run's result; its hash names the run file."""
    spec = preset.lines[line]
    return {
        "schema": SCHEMA, "suite": True,
        "task": {"name": task, **preset.tasks[task], "batch_size": preset.batch_size, "seed": preset.seed,
                 "read_twice": read_twice},
        "line": line, "mixer": spec["name"], "knobs": {k: v for k, v in spec.items() if k != "name"},
        "d_model": preset.d_model, "lr": lr,
        "model": {"d_model": preset.d_model, "n_layers": N_LAYERS, "layers": [PAIRING, dict(spec)], "mlp": None},
        "trainer": {"max_epochs": epochs or preset.max_epochs, "precision": preset.precision, "gradient_clip_val": 1.0},
        "seed": preset.seed,
    }


# ---- one run ----------------------------------------------------------------------------------------------------
_DATAMODULES: dict[str, object] = {}


def datamodule_for(task: dict):
    """One DataModule per task setting per process (its draws are the slow part of a small run's set-up)."""
    from zoo.tasks import build_task
    key = json.dumps(task, sort_keys=True)
    if key not in _DATAMODULES:
        options = dict(task)
        module = build_task(options.pop("name"), **options)
        module.setup("fit")
        _DATAMODULES[key] = module
    return _DATAMODULES[key]


def train_suite_run(config: dict, device: str) -> dict:
    """Fit on train, then score validation (for the lr choice) and test; per-slice accuracies of both."""
    import lightning as L
    from zoo.lit import LitLM
    from zoo.model import LM
    from zoo.train import slice_rows

    _quiet_lightning()
    started = time.perf_counter()
    datamodule = datamodule_for(config["task"])
    L.seed_everything(config["seed"], workers=True, verbose=False)
    model = LM(vocab_size=datamodule.vocab_size, **config["model"])
    lit = LitLM(model, datamodule.slice_keys, lr=config["lr"])
    trainer = L.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, **config["trainer"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"lightning(\.|$)")
        trainer.fit(lit, datamodule=datamodule)
        # validation: the test split's slices drawn from their own seed; scored through the test loop's metrics
        trainer.test(lit, dataloaders=datamodule.val_dataloader(), verbose=False)
        validation = dict(lit.test_results)
        trainer.test(lit, dataloaders=datamodule.test_dataloader(), verbose=False)
    slices = slice_rows(model, datamodule.describe_slices(), lit.test_results)
    for row in slices:
        row["val_accuracy"] = validation[row["slice"]]
    longest = max(s["input_seq_len"] for s in slices)
    return {
        "params": model.num_parameters(),
        "state_size": model.state_size(longest), "state_size_seq_len": longest,
        "val_mean_accuracy": sum(validation.values()) / len(validation),
        "mean_accuracy": sum(s["accuracy"] for s in slices) / len(slices),
        "slices": slices,
        "train_seconds": time.perf_counter() - started,
        "threads": torch.get_num_threads(),
    }


# ---- the suite --------------------------------------------------------------------------------------------------
def run_suite(preset: SuitePreset, tasks: list[str], lines: list[str], read_twice: tuple, out: Path, device: str,
              workers: int = 1, stop_after_minutes: float | None = None, epochs: int | None = None) -> dict:
    runs = suite_runs(preset, tasks, lines, read_twice, epochs)
    run_dir = out / "runs"
    run_dir.mkdir(parents=True, exist_ok=True)
    pending = [c for c in runs if not (run_dir / f"{run_key(c)}.json").exists()]
    workers = max(1, min(workers, len(pending) or 1))
    print(f"recall suite, preset {preset.name}: {len(tasks)} task(s) x {len(lines)} line(s) x read_twice "
          f"{list(read_twice)} x {len(preset.lrs)} lr(s) = {len(runs)} runs, {len(runs) - len(pending)} already "
          f"done, {workers} worker(s), writing to {out}")
    deadline = None if stop_after_minutes is None else time.monotonic() + 60 * stop_after_minutes
    trained = 0
    progress = tqdm(total=len(pending), desc="suite runs", unit="run")
    for config, result in _train_all(pending, device, workers, deadline):
        write_json(run_dir / f"{run_key(config)}.json",
                   {"key": run_key(config), "config": config, "result": result, "device": describe(device)})
        trained += 1
        progress.update()
    progress.close()
    records = [json.loads(p.read_text()) for p in (run_dir / f"{run_key(c)}.json" for c in runs) if p.exists()]
    summary = summarise(preset, records, tasks, lines, device)
    summary["runs_trained_now"], summary["runs_left"] = trained, len(runs) - len(records)
    write_outputs(summary, out)
    return summary


def _train_all(configs: list[dict], device: str, workers: int, deadline: float | None):
    """(config, result) as runs finish: here, or in ``workers`` single-threaded processes (see recall.py)."""
    yield from run_as_they_finish(configs, lambda config: train_suite_run(config, device), train_suite_run,
                                  (device,), workers, deadline)


def flat_row(record: dict) -> dict:
    config = record["config"]
    return {"task": config["task"]["name"], "line": config["line"], "read_twice": config["task"]["read_twice"],
            "mixer": config["mixer"], "knobs": json.dumps(config["knobs"], sort_keys=True),
            "d_model": config["d_model"], "lr": config["lr"], "epochs": config["trainer"]["max_epochs"],
            **result_columns(record, {"accuracy": "acc", "val_accuracy": "val"})}


def summarise(preset: SuitePreset, records: list[dict], tasks: list[str], lines: list[str], device: str) -> dict:
    rows = [flat_row(r) for r in records]
    best = mark_best_lr(rows, lambda row: (row["task"], row["line"], row["read_twice"], row["epochs"]), "chosen_lr")
    return {
        "environment": describe(device), "preset": asdict(preset), "tasks": tasks, "lines": lines,
        "protocol": {"pairing": [PAIRING, "<line's mixer>"], "n_layers": N_LAYERS,
                     "lr": "chosen per (task, line, read_twice) by mean validation accuracy; test reported once",
                     "state_size": "LM.state_size at the task's longest test input (read-twice included)",
                     "accuracy": "mean over the task's test slices of exact-match accuracy at the answer positions"},
        "runs": rows, "best": best,
    }


def table_rows(summary: dict) -> list[dict]:
    """One row per (line, read_twice): the test accuracy of each task at its chosen lr, and the state sizes."""
    table = {}
    for row in summary["best"]:
        key = (row["line"], row["read_twice"])
        entry = table.setdefault(key, {"line": row["line"], "read_twice": row["read_twice"], "knobs": row["knobs"]})
        entry[row["task"]] = row["mean_accuracy"]
        entry.setdefault("_states", []).append(row["state_size"])
    rows = []
    for (line, twice), entry in table.items():
        states = entry.pop("_states")
        entry["state_size"] = f"{min(states)}-{max(states)}" if min(states) != max(states) else str(states[0])
        rows.append(entry)
    order = {line: i for i, line in enumerate(summary["lines"])}
    return sorted(rows, key=lambda r: (order.get(r["line"], 99), r["read_twice"]))


def write_outputs(summary: dict, out: Path):
    write_json(out / "suite.json", summary)
    write_csv(out / "suite.csv", summary["runs"])
    rows = table_rows(summary)
    tasks = [t for t in summary["tasks"] if any(t in r for r in rows)]
    columns = ["line", "knobs", "read_twice", "state_size", *tasks]
    print(format_table(rows, columns))
    write_markdown(out / "suite.md", rows, columns, summary["environment"])
    plot_grid(rows, tasks, out / "suite.png", summary["preset"]["name"])


def plot_grid(rows: list[dict], tasks: list[str], path: Path, preset_name: str):
    """Test accuracy as a grid: rows = line (and read-twice), columns = task, each cell annotated."""
    if not rows or not tasks:
        return
    plt = pyplot()
    labels = [r["line"] + (" (read twice)" if r["read_twice"] else "") for r in rows]
    values = [[r.get(t, float("nan")) for t in tasks] for r in rows]
    fig, ax = plt.subplots(figsize=(1.4 * len(tasks) + 3.5, 0.5 * len(rows) + 2))
    image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            if value == value:  # not NaN
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black",
                        fontsize=8)
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    fig.colorbar(image, ax=ax, label="test accuracy (mean over slices)")
    ax.set_title(f"recall suite, preset {preset_name}: [short_conv, mixer], lr chosen on validation")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args) -> int:
    try:
        preset = resolve_preset("recall suite", args.preset, SUITE_PRESETS, PUBLIC_SUITE_PRESETS)
        tasks, lines = resolve_selection(preset, args.task.split(",") if args.task else None,
                                         args.mixers.split(",") if args.mixers else None)
        if args.epochs is not None and args.epochs < 1:
            raise ValueError(f"--epochs must be a positive integer, got {args.epochs}")
    except ValueError as error:
        raise SystemExit(f"error: {error}")
    device = resolve_device(preset, args.device)
    out = Path(args.out or f"bench_results/recall-suite-{preset.name}")
    workers = args.workers or preset.workers or os.cpu_count() or 1
    started = time.perf_counter()
    summary = run_suite(preset, tasks, lines, READ_TWICE[args.read_twice], out, device, workers, args.stop_after,
                        args.epochs)
    print(f"{len(summary['runs'])} runs ({summary['runs_trained_now']} trained now) in "
          f"{time.perf_counter() - started:.0f} s; wrote {out / 'suite.json'}, {out / 'suite.csv'}, "
          f"{out / 'suite.md'}, {out / 'suite.png'}")
    if summary["runs_left"]:
        print(f"stopped after --stop-after {args.stop_after:g} min: {summary['runs_left']} runs left, so these files "
              f"are partial; run the same command again to go on")
    return 0
