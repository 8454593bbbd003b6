"""The compute-matched text comparison: after ``python train.py -m experiment=text_compare`` (every mixer trained
for the same number of steps at the same batch and length, so the same token budget), one table of parameters,
state size, training tokens/s and bits per byte, written as text_compare.{json,csv,md,png} in the sweep folder.

Registered as a Hydra callback by configs/experiment/text_compare.yaml; ``write_report(sweep_dir)`` also
rebuilds the report from a finished (or partly finished) sweep folder. ``python -m zoo.bench text [--models a,b]
[--executor local|ray|submitit ...] [overrides]`` runs the same comparison through the sweep engine (one run per
model, results kept in OUT/runs/, resumable) and writes the same report in OUT.
"""
import csv
import json
import statistics
from pathlib import Path

from hydra.experimental.callback import Callback

RESULT_FILE = "test_accuracy.json"  # zoo.train.RESULT_FILE (not imported: this module loads before torch)
COLUMNS = ["model", "num_parameters", "state_size", "tokens_trained", "train_tokens_per_s", "val_bpb", "test_bpb"]


def add_arguments(parser):
    from zoo.bench.executors import add_executor_arguments
    parser.add_argument("--out", default="bench_results/text-compare", help="output folder")
    parser.add_argument("--models", default=None,
                        help="comma-separated model configs (default: experiment=text_compare's list)")
    add_executor_arguments(parser, "1: one model after another")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to experiment=text_compare")


def run(args) -> int:
    from omegaconf import OmegaConf
    from zoo.bench.executors import executor_from_args
    from zoo.bench.sweep import Sweep, report_stopped, run_sweep
    from zoo.bench.train_runs import compose_config, train_in_folder, train_spec

    out = Path(args.out)
    listed = compose_config(["experiment=text_compare"], hydra=True).hydra.sweeper.params.model
    models = (args.models or listed).split(",")
    specs = []
    for model in models:
        try:
            config = compose_config(["experiment=text_compare", f"model={model}", *args.overrides])
        except Exception as error:  # noqa: BLE001  (Hydra's own error for an unknown config name)
            raise SystemExit(f"error: model={model}: {str(error).splitlines()[0]}") from None
        specs.append(train_spec(model, OmegaConf.to_container(config, resolve=True), out))
    executor = executor_from_args(args, out, default_workers=1)
    outcome = run_sweep(Sweep(f"text comparison: {', '.join(models)}", specs, train_in_folder, out,
                              report=lambda outcome: write_report(out)), executor, args.stop_after)
    return report_stopped(outcome, args.stop_after)


def _model_name(job_dir: Path) -> str:
    from omegaconf import OmegaConf
    overrides = job_dir / ".hydra" / "overrides.yaml"
    for override in OmegaConf.load(overrides) if overrides.exists() else []:
        if override.startswith("model="):
            return override.split("=", 1)[1]
    return job_dir.name


def _median_tokens_per_s(job_dir: Path) -> float | None:
    """Median of the training tokens/s the run logged (steps after the first: the first pays for warm-up)."""
    values = []
    for metrics in job_dir.glob("logs/**/metrics.csv"):
        with open(metrics) as handle:
            values += [float(r["train/tok_s"]) for r in csv.DictReader(handle) if r.get("train/tok_s")]
    values = values[1:] or values
    return statistics.median(values) if values else None


def job_row(job_dir: Path) -> dict | None:
    result_file = job_dir / RESULT_FILE
    if not result_file.exists():
        return None
    result = json.loads(result_file.read_text())
    text = result["slices"][0]
    task = result["task"]
    return {"model": _model_name(job_dir), "num_parameters": result["num_parameters"],
            "state_size": text["state_size"],
            "tokens_trained": result["global_step"] * task["batch_size"] * task["seq_len"],
            "train_tokens_per_s": _median_tokens_per_s(job_dir),
            "val_bpb": (result.get("validation") or {}).get("best"), "test_bpb": text.get("bits_per_byte"),
            "tokenizer": text.get("tokenizer"), "seq_len": text["input_seq_len"]}


def plot(rows: list[dict], path: Path):
    from zoo.report import pyplot
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, x, label in ((axes[0], "state_size", "state size (numbers per sequence, at seq_len)"),
                           (axes[1], "train_tokens_per_s", "training tokens/s")):
        for row in rows:
            if row[x] is None or row["val_bpb"] is None:
                continue
            axis.scatter(row[x], row["val_bpb"])
            axis.annotate(row["model"], (row[x], row["val_bpb"]), textcoords="offset points", xytext=(4, 4),
                          fontsize=8)
        axis.set_xscale("log")
        axis.set_xlabel(label)
        axis.set_ylabel("validation bits per byte (lower is better)")
        axis.grid(alpha=0.3)
    tokens = {row["tokens_trained"] for row in rows}
    figure.suptitle(f"text: every model trained on {', '.join(f'{t:,}' for t in sorted(tokens))} tokens")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(sweep_dir) -> list[dict]:
    """Write text_compare.{json,csv,md,png} for the finished jobs of a sweep folder; returns the rows."""
    from zoo.bench.environment import describe
    from zoo.report import format_table, write_csv, write_json, write_markdown

    sweep_dir = Path(sweep_dir)
    number = lambda p: int(p.name.split("_", 1)[0]) if p.name.split("_", 1)[0].isdigit() else 1 << 30
    # Hydra's job folders, or the engine's (python -m zoo.bench text: one folder per model)
    jobs = sorted((p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir() or (p / RESULT_FILE).exists()),
                  key=lambda p: (number(p), p.name))
    rows = [row for row in map(job_row, jobs) if row is not None]
    if not rows:
        return rows
    environment = describe("cpu")
    write_json(sweep_dir / "text_compare.json", {"environment": environment, "rows": rows})
    write_csv(sweep_dir / "text_compare.csv", rows)
    write_markdown(sweep_dir / "text_compare.md", rows, COLUMNS, environment)
    plot(rows, sweep_dir / "text_compare.png")
    print(format_table(rows, COLUMNS))
    return rows


class TextCompareReport(Callback):
    def on_multirun_end(self, config, **kwargs):
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir() and write_report(sweep_dir):
            print(f"text comparison: {sweep_dir}/text_compare.{{json,csv,md,png}}")
