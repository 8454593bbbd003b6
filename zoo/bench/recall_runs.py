"""One recall run and the rows made from it, shared by the MQAR sweep (recall.py) and the suite (recall_suite.py).

A run is zoology's 2-layer LM fitted on the task's train split, then scored on the validation split (its own
seed, the test slices: what the lr choice reads) and on the test split (only reported). Its config is a plain
dict (``run_config`` of either sweep) whose hash names its result file.
"""
import hashlib
import json
import time
import warnings

import torch

from zoo.bench.environment import describe
from zoo.report import format_table, write_csv, write_json, write_markdown


def run_key(config: dict) -> str:
    return hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


_DATAMODULES: dict[str, object] = {}


def datamodule_for(task: dict):
    """One DataModule per task setting per process (its draws are the slow part of a small run's set-up); every
    split drawn from its own seed, so a run's data never depend on what ran before it in the process."""
    from zoo.tasks import build_task
    key = json.dumps(task, sort_keys=True)
    if key not in _DATAMODULES:
        options = dict(task)
        module = build_task(options.pop("name", "mqar"), **options)
        module.setup(None)
        _DATAMODULES[key] = module
    return _DATAMODULES[key]


def train_and_score(config: dict, device: str) -> dict:
    """Fit one run, then score validation and test: the result row of its run file (the same for a config on one
    device whatever ran before it, and whatever executor or worker count runs it)."""
    import lightning as L
    from zoo.lit import LitLM
    from zoo.model import LM
    from zoo.train import quiet_lightning, slice_rows

    quiet_lightning()
    started, cpu_started = time.perf_counter(), time.process_time()
    datamodule = datamodule_for(config["task"])
    L.seed_everything(config["seed"], workers=True, verbose=False)
    model = LM(vocab_size=datamodule.vocab_size, **config["model"])
    lit = LitLM(model, datamodule.slice_keys, lr=config["lr"])
    trainer = L.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, **config["trainer"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"lightning(\.|$)")  # worker-count and similar advice
        trainer.fit(lit, datamodule=datamodule)
        # validation: the test slices drawn from their own seed, scored through the test loop's metrics
        trainer.test(lit, dataloaders=datamodule.val_dataloader(), verbose=False)
        validation = dict(lit.test_results)
        trainer.test(lit, dataloaders=datamodule.test_dataloader(), verbose=False)
    slices = slice_rows(model, datamodule.describe_slices(), lit.test_results)
    for row in slices:
        row["val_accuracy"] = validation[row["slice"]]
    longest = max(s["input_seq_len"] for s in slices)
    return {
        "val_mean_accuracy": sum(validation.values()) / len(validation),
        "val_slices": validation,
        "params": model.num_parameters(),
        "state_size": model.state_size(longest),
        "state_size_seq_len": longest,
        "mean_accuracy": sum(s["accuracy"] for s in slices) / len(slices),
        "slices": slices,
        "train_seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,  # all threads: an idle-machine estimate on a shared one
        "threads": torch.get_num_threads(),
    }


# ---- rows and the lr choice ---------------------------------------------------------------------------------------
def result_columns(record: dict, per_slice: dict) -> dict:
    """The measured columns of a run's row: sizes, accuracies, time and key, then for each slice the fields named
    in ``per_slice`` (slice field -> column prefix)."""
    result = record["result"]
    row = {name: result[name] for name in ("params", "state_size", "val_mean_accuracy", "mean_accuracy",
                                           "train_seconds")}
    row["key"] = record["key"]
    for s in result["slices"]:
        for field, prefix in per_slice.items():
            if field in s:
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


def summarise(records: list[dict], flat_row, point, flag: str, device: str, **about) -> dict:
    """Every run as a row (``flat_row(record)``), the lr chosen per ``point`` (flagged ``flag``), and ``about``
    (preset, protocol, ...) with the machine."""
    rows = [flat_row(r) for r in records]
    best = mark_best_lr(rows, point, flag)
    return {"environment": describe(device), **about, "runs": rows, "best": best}


def write_outputs(summary: dict, out, stem: str, table: list[dict], columns: list[str], plot) -> list[str]:
    """``stem``.json (the summary), .csv (every run), .md (``table``), .png (``plot(path)``); the table printed."""
    write_json(out / f"{stem}.json", summary)
    write_csv(out / f"{stem}.csv", summary["runs"])
    print(format_table(table, columns))
    write_markdown(out / f"{stem}.md", table, columns, summary["environment"])
    plot(out / f"{stem}.png")
    return [str(out / f"{stem}.{suffix}") for suffix in ("json", "csv", "md", "png")]


def resolve_device(preset, requested: str | None) -> str:
    """--device, else the preset's accelerator; a CUDA preset on a machine without CUDA exits with one line."""
    device = requested or ("cuda" if preset.accelerator == "gpu" else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: preset {preset.name} trains on CUDA, which is not available here "
                         f"(use --preset cpu, or --device cpu to run it anyway)")
    return device


def chance_level(task: dict) -> float:
    """One over the distinct answer tokens of the task's test split: a uniform guess among the answers, the floor
    drawn on the recall plots (MQAR: 1 / (V / 2), the values)."""
    from zoo.tasks.data import IGNORE_INDEX
    answers = set()
    for loader in datamodule_for(task).test_dataloader():
        for batch in loader:
            labels = batch["labels"]
            answers.update(labels[labels != IGNORE_INDEX].unique().tolist())
    return 1.0 / max(1, len(answers))
