"""Anchor vs anchor + hierarchical memory vs a dense model of the anchor's plus the fetched size, on task=facts:
``python -m zoo.bench hpm [--out DIR] [hydra overrides ...]`` (the models come from experiment=hpm_compare).

Each model trains on the same tokens (one datamodule, same order and seed) for the same number of epochs, is
tested once, and the accuracy per frequency bucket goes into a table (stdout, Markdown, CSV), JSON and a PNG.
The three models are one sweep (zoo/bench/sweep.py): each result is kept in ``OUT/runs/<model>-<hash>.json``,
so a stopped comparison resumes, and the executor options (--executor, --workers, --threads) choose where the
models train. A model's result depends on its config alone (seeded, its own intra-op threads).
"""
import argparse
from pathlib import Path

import torch
from omegaconf import OmegaConf

from zoo.bench.environment import describe
from zoo.bench.executors import add_executor_arguments, executor_from_args
from zoo.report import format_table, pyplot, write_csv, write_json, write_markdown
from zoo.bench.sweep import Sweep, report_stopped, run_sweep
from zoo.bench.train_runs import compose_config, train_in_folder, train_spec



def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("--out", default="bench_results/hpm-compare", help="output folder")
    add_executor_arguments(parser, "1: one model after another")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to experiment=hpm_compare")


def variants(memory: dict, d_model: int) -> dict[str, dict]:
    """The three MLPs: the anchor's SwiGLU, the memory, and a SwiGLU with the anchor's + the fetched hidden units."""
    from zoo.blocks.hpm import HierarchicalMemoryFFN

    options = {k: v for k, v in memory.items() if k != "name"}
    ffn = HierarchicalMemoryFFN(d_model, **options)
    anchor_hidden = ffn.anchor.down_proj.in_features
    dense_hidden = anchor_hidden + sum(ffn.block_sizes)
    anchor = {"name": "swiglu", "expand": anchor_hidden / d_model, "multiple_of": 1}
    dense = {"name": "swiglu", "expand": dense_hidden / d_model, "multiple_of": 1}
    return {"anchor": anchor, "memory": memory, "dense": dense}


def run(args) -> int:
    out = Path(args.out)
    base = compose_config(["experiment=hpm_compare", *args.overrides])
    memory = OmegaConf.to_container(base.model.mlp, resolve=True)
    specs = []
    for name, mlp in variants(memory, base.model.d_model).items():
        config = OmegaConf.to_container(base, resolve=True)
        config["model"]["mlp"] = mlp
        specs.append(train_spec(name, config, out))
    executor = executor_from_args(args, out, default_workers=1)
    outcome = run_sweep(Sweep("hpm comparison: anchor, memory, dense", specs, train_in_folder, out), executor,
                        args.stop_after)
    if outcome.left:
        return report_stopped(outcome, args.stop_after)
    write_report({r["config"]["name"]: r["result"] for r in outcome.records}, out,
                 chance=1 / base.task.values_per_attribute)
    return 0


def write_report(results: dict, out: Path, chance: float | None = None):
    rows = table_rows(results)
    columns = list(rows[0])
    print(format_table(rows, columns))
    sizes = {name: r["sizes"] for name, r in results.items()}
    print("parameters:", sizes)
    environment = describe(torch.device("cpu"))
    write_json(out / "hpm_compare.json", {"rows": rows, "sizes": sizes, "results": results, "chance": chance,
                                          "environment": environment})
    write_markdown(out / "hpm_compare.md", rows, columns, environment)
    write_csv(out / "hpm_compare.csv", rows, columns)
    plot(rows, sizes, out / "hpm_compare.png", chance)
    print(f"wrote {out}/hpm_compare.json, .md, .csv, .png")


def table_rows(results: dict) -> list[dict]:
    """One row per frequency bucket (and a mean row): the three accuracies and the memory's gain over each."""
    slices = results["memory"]["slices"]
    rows = []
    for i, info in enumerate(slices):
        row = {"bucket": info["slice"], "probes": info["num_probes"], "path_at_home": info["path_at_home"]}
        for name in ("anchor", "memory", "dense"):
            row[name] = results[name]["slices"][i]["accuracy"]
        row["memory-anchor"] = row["memory"] - row["anchor"]
        row["memory-dense"] = row["memory"] - row["dense"]
        rows.append(row)
    mean = {"bucket": "mean", "probes": sum(r["probes"] for r in rows), "path_at_home": None}
    for key in ("anchor", "memory", "dense", "memory-anchor", "memory-dense"):
        mean[key] = sum(r[key] for r in rows) / len(rows)
    return rows + [mean]


def plot(rows: list[dict], sizes: dict, path: Path, chance: float | None = None):
    plt = pyplot()
    buckets = [r for r in rows if r["bucket"] != "mean"]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.27
    for k, name in enumerate(("anchor", "memory", "dense")):
        active = sizes[name].get("active", sizes[name]["parameters"])
        label = f"{name} ({active / 1e3:.0f}k active" + (f", {sizes[name]['bank'] / 1e3:.0f}k bank)" if "bank" in
                                                            sizes[name] else ")")
        ax.bar([i + (k - 1) * width for i in range(len(buckets))], [r[name] for r in buckets], width, label=label)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({chance:.3g}: one attribute's values)")
    ax.set_xticks(range(len(buckets)), [r["bucket"] for r in buckets])
    ax.set_xlabel("how often the probed fact occurs in training (rare -> frequent)")
    ax.set_ylabel("test accuracy")
    ax.set_title("task=facts: accuracy per frequency bucket")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
