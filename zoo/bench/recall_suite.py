"""The recall suite: ``python -m zoo.bench recall --suite [--task a,b] [--mixers lines] [--read-twice SETTINGS]``.

Every line (a mixer at matched state, recall_suite_grid.py) in zoology's [short_conv, mixer] LM on every task of
the suite, each (task, line, read-twice setting) at every lr of the preset, the lr chosen on the validation split and
the test split scored once. Runs are cached like the MQAR sweep's (``OUT/runs/<hash of the config>.json``,
written as each finishes, never rerun), so a stopped suite resumes and a new line trains only its own runs.
Outputs: ``suite.json``, ``suite.csv`` (every run, per-slice validation and test accuracy, state size),
``suite.md`` (the table: one row per line and read-twice setting, one column per task) and ``suite.png`` (the
same as a grid).

``--read-twice`` takes settings of ``task.read_twice`` (off, train_and_test, test_only: zoo/tasks/read_twice.py),
comma-separated; ``on`` and ``both`` stay as the older names of ``train_and_test`` and ``off,train_and_test``.
"""
import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from zoo.bench.choices import resolve_preset
from zoo.bench.executors import executor_from_args
from zoo.bench.recall_runs import (chance_level, result_columns, resolve_device, run_key, summarise,
                                   train_and_score, write_outputs)
from zoo.bench.recall_suite_grid import N_LAYERS, PAIRING, PUBLIC_SUITE_PRESETS, SUITE_PRESETS, SuitePreset
from zoo.report import pyplot
from zoo.bench.sweep import Outcome, RunSpec, Sweep, report_stopped, run_sweep
from zoo.tasks.read_twice import OFF, READ_TWICE_SETTINGS, TEST_ONLY, TRAIN_AND_TEST, read_twice_setting

SCHEMA = 1
READ_TWICE_ALIASES = {"on": (TRAIN_AND_TEST,), "both": (OFF, TRAIN_AND_TEST)}  # the flag's values before test_only
# The config value of each setting: off and train_and_test keep the bools they were written as before test_only
# existed, so the run files already committed (keyed by the config's hash) are still found.
CONFIG_VALUE = {OFF: False, TRAIN_AND_TEST: True, TEST_ONLY: TEST_ONLY}


def parse_read_twice(text: str) -> tuple:
    """--read-twice: comma-separated settings (or an older alias), in order; ValueError naming a bad one."""
    settings = []
    for name in (part.strip() for part in text.split(",")):
        if name not in READ_TWICE_SETTINGS and name not in READ_TWICE_ALIASES:
            raise ValueError(f"--read-twice: unknown setting {name!r}; settings: {', '.join(READ_TWICE_SETTINGS)} "
                             f"(comma-separated; 'on' and 'both' are the older names of train_and_test and "
                             f"off,train_and_test)")
        settings.extend(READ_TWICE_ALIASES.get(name, (name,)))
    return tuple(dict.fromkeys(settings))


def add_suite_arguments(parser: argparse.ArgumentParser):
    """The suite's options of ``python -m zoo.bench recall`` (--preset, --mixers, --out, --device and the executor's
    options are shared with the MQAR sweep)."""
    parser.add_argument("--suite", action="store_true",
                        help="run the recall suite (every task, every line at matched state) instead of the MQAR sweep")
    parser.add_argument("--task", default=None,
                        help="suite tasks to run, comma-separated (implies --suite; default: all of the preset's)")
    parser.add_argument("--read-twice", default=OFF,
                        help="suite: JRT-Prompt (context read twice before the queries), comma-separated settings: off, "
                             "train_and_test (every split read twice), test_only (trained on single reads, validated "
                             "and tested read twice); default off")
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


def run_config(preset: SuitePreset, task: str, line: str, lr: float, read_twice, epochs: int | None) -> dict:
    """Everything that determines a run's result; its hash names the run file (keep it stable: committed run
    files are found by it)."""
    spec = preset.lines[line]
    return {
        "schema": SCHEMA, "suite": True,
        "task": {"name": task, **preset.tasks[task], "batch_size": preset.batch_size, "seed": preset.seed,
                 "read_twice": CONFIG_VALUE[read_twice_setting(read_twice)]},
        "line": line, "mixer": spec["name"], "knobs": {k: v for k, v in spec.items() if k != "name"},
        "d_model": preset.d_model, "lr": lr,
        "model": {"d_model": preset.d_model, "n_layers": N_LAYERS, "layers": [PAIRING, dict(spec)], "mlp": None},
        "trainer": {"max_epochs": epochs or preset.max_epochs, "precision": preset.precision, "gradient_clip_val": 1.0},
        "seed": preset.seed,
    }


# ---- the suite --------------------------------------------------------------------------------------------------
def make_sweep(preset: SuitePreset, tasks: list[str], lines: list[str], read_twice: tuple, out: Path, device: str,
               epochs: int | None = None) -> Sweep:
    runs = suite_runs(preset, tasks, lines, read_twice, epochs)
    specs = [RunSpec(run_key(config), config, device) for config in runs]
    title = (f"recall suite, preset {preset.name}: {len(tasks)} task(s) x {len(lines)} line(s) x read_twice "
             f"{[read_twice_setting(r) for r in read_twice]} x {len(preset.lrs)} lr(s)")
    report = lambda outcome: write_report(preset, outcome, tasks, lines, out, device)  # noqa: E731
    return Sweep(title, specs, train_and_score, out, report)


def flat_row(record: dict) -> dict:
    config = record["config"]
    return {"task": config["task"]["name"], "line": config["line"],
            "read_twice": read_twice_setting(config["task"]["read_twice"]),
            "mixer": config["mixer"], "knobs": json.dumps(config["knobs"], sort_keys=True),
            "d_model": config["d_model"], "lr": config["lr"], "epochs": config["trainer"]["max_epochs"],
            **result_columns(record, {"accuracy": "acc", "val_accuracy": "val"})}


def write_report(preset: SuitePreset, outcome: Outcome, tasks: list[str], lines: list[str], out: Path,
                 device: str) -> dict:
    """suite.json, .csv, .md and .png from every finished run; returns the summary."""
    chance = {row["config"]["task"]["name"]: chance_level(row["config"]["task"]) for row in
              {r["config"]["task"]["name"]: r for r in outcome.records}.values()}
    summary = summarise(
        outcome.records, flat_row, lambda row: (row["task"], row["line"], row["read_twice"], row["epochs"]),
        "chosen_lr", device, preset=asdict(preset), tasks=tasks, lines=lines,
        protocol={"pairing": [PAIRING, "<line's mixer>"], "n_layers": N_LAYERS,
                  "lr": "chosen per (task, line, read_twice) by mean validation accuracy; test reported once",
                  "read_twice": "off: every split read once; train_and_test: every split read twice; test_only: "
                                "trained on single reads, validation and test read twice",
                  "state_size": "LM.state_size at the task's longest test input (read-twice included)",
                  "accuracy": "mean over the task's test slices of exact-match accuracy at the answer positions",
                  "chance": "per task: one over the distinct answer tokens of its test split"},
        chance=chance, runs_trained_now=outcome.trained_now, runs_left=outcome.left)
    rows = table_rows(summary)
    shown = [t for t in summary["tasks"] if any(t in r for r in rows)]
    write_outputs(summary, out, "suite", rows, ["line", "knobs", "read_twice", "state_size", *shown],
                  lambda path: plot_grid(rows, shown, path, preset.name, chance))
    return summary


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
    return sorted(rows, key=lambda r: (order.get(r["line"], 99), READ_TWICE_SETTINGS.index(r["read_twice"])))


def plot_grid(rows: list[dict], tasks: list[str], path: Path, preset_name: str, chance: dict | None = None):
    """Test accuracy as a grid: rows = line (and read-twice), columns = task (with its chance level), each cell
    annotated. Wide enough for its two-line title at one task."""
    if not rows or not tasks:
        return
    plt = pyplot()
    chance = chance or {}
    labels = [r["line"] + (f" ({r['read_twice']})" if r["read_twice"] != OFF else "") for r in rows]
    columns = [f"{t}\n(chance {chance[t]:.2g})" if t in chance else t for t in tasks]
    values = [[r.get(t, float("nan")) for t in tasks] for r in rows]
    fig, ax = plt.subplots(figsize=(max(7.0, 1.4 * len(tasks) + 4.5), 0.5 * len(rows) + 2.5), layout="constrained")
    image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            if value == value:  # not NaN
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black",
                        fontsize=8)
    ax.set_xticks(range(len(tasks)), columns, rotation=30 if len(tasks) > 1 else 0, ha="right" if len(tasks) > 1
                  else "center", fontsize=8)
    ax.set_yticks(range(len(labels)), labels)
    fig.colorbar(image, ax=ax, label="test accuracy (mean over slices)")
    fig.suptitle(f"recall suite, preset {preset_name}\n[short_conv, mixer], lr chosen on validation", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args) -> int:
    try:
        preset = resolve_preset("recall suite", args.preset, SUITE_PRESETS, PUBLIC_SUITE_PRESETS)
        tasks, lines = resolve_selection(preset, args.task.split(",") if args.task else None,
                                         args.mixers.split(",") if args.mixers else None)
        read_twice = parse_read_twice(args.read_twice)
        if args.epochs is not None and args.epochs < 1:
            raise ValueError(f"--epochs must be a positive integer, got {args.epochs}")
    except ValueError as error:
        raise SystemExit(f"error: {error}")
    device = resolve_device(preset, args.device)
    out = Path(args.out or f"bench_results/recall-suite-{preset.name}")
    executor = executor_from_args(args, out, preset.workers)
    started = time.perf_counter()
    outcome = run_sweep(make_sweep(preset, tasks, lines, read_twice, out, device, args.epochs),
                        executor, args.stop_after)
    print(f"{len(outcome.records)} runs ({outcome.trained_now} trained now) in {time.perf_counter() - started:.0f} s; "
          f"wrote {', '.join(str(out / f'suite.{suffix}') for suffix in ('json', 'csv', 'md', 'png'))}")
    return report_stopped(outcome, args.stop_after)
