"""Anchor vs anchor + hierarchical memory vs a dense model of the anchor's plus the fetched size, on task=facts:
``python -m zoo.bench hpm [--experiment hpm_compare|hpm_paper_ratios] [--lrs LR ...] [--seeds N] [--out DIR]
[hydra overrides ...]``.

Four models train on the same tokens (one datamodule per seed: same data, order and seed) for the same number of
epochs: the anchor, the memory, the memory without its generic block (``task.generic_probability=0``: every
sequence trains its own leaf's blocks) and the dense model. Each (model, lr, seed) is one run, tested once on its
best checkpoint by validation. For each model the lr with the best validation accuracy (mean over seeds) is
chosen; the table gives, per frequency bucket, the test accuracy at that lr as mean ± standard deviation over
seeds, and the per-seed differences (memory - anchor etc.) the same way. Seed s sets both the model's seed and
the task's (``seed=s task.seed=s``: another corpus, tree and probe set).

Sizes are ``LM.size_report()``'s: ``bank`` = every memory-bank parameter (generic blocks included), ``fetched`` =
the bank parameters one context uses, ``anchor`` = all parameters - bank. The size table gives bank/anchor and
fetched/anchor so that the regime can be checked against the paper's (~25-30x, ~10%).

The runs are one sweep (zoo/bench/sweep.py): each result is kept in ``OUT/runs/<run>-<hash>.json``, so a stopped
comparison resumes, and the executor options (--executor, --workers, --threads) choose where the models train.
"""
import argparse
import math
from pathlib import Path

import torch
from omegaconf import OmegaConf

from zoo.bench.environment import describe
from zoo.bench.executors import add_executor_arguments, executor_from_args
from zoo.report import format_table, pyplot, write_csv, write_json, write_markdown
from zoo.bench.sweep import Sweep, report_stopped, run_sweep
from zoo.bench.train_runs import compose_config, train_in_folder, train_spec

EXPERIMENTS = ("hpm_compare", "hpm_paper_ratios")  # configs/experiment/<name>.yaml
VARIANTS = ("anchor", "memory", "memory-no-generic", "dense")
DIFFERENCES = (("memory-anchor", "memory", "anchor"), ("memory-dense", "memory", "dense"),
               ("generic-none", "memory", "memory-no-generic"))


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("--out", default="bench_results/hpm-compare", help="output folder")
    parser.add_argument("--experiment", default="hpm_compare", choices=EXPERIMENTS,
                        help="hpm_compare: bank 1.2x the anchor (16 leaves); hpm_paper_ratios: the paper's regime, "
                             "bank 20.7x the anchor, 10%% of the anchor fetched (256 leaves)")
    parser.add_argument("--lrs", type=float, nargs="+", default=None, metavar="LR",
                        help="learning rates to try; each model's is chosen on validation (default: the "
                             "experiment's optim.lr)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per (model, lr) (default 1)")
    add_executor_arguments(parser, "1: one model after another")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to the experiment")


def variants(memory: dict, d_model: int) -> dict[str, tuple[dict, dict]]:
    """(MLP, task overrides) of each model: the anchor's SwiGLU, the memory (with and without the generic block),
    and a SwiGLU with the anchor's + the fetched hidden units."""
    from zoo.blocks.hpm import HierarchicalMemoryFFN

    options = {k: v for k, v in memory.items() if k != "name"}
    ffn = HierarchicalMemoryFFN(d_model, **options)
    anchor_hidden = ffn.anchor.down_proj.in_features
    dense_hidden = anchor_hidden + sum(ffn.block_sizes)
    anchor = {"name": "swiglu", "expand": anchor_hidden / d_model, "multiple_of": 1}
    dense = {"name": "swiglu", "expand": dense_hidden / d_model, "multiple_of": 1}
    return {"anchor": (anchor, {}), "memory": (memory, {}),
            "memory-no-generic": (memory, {"generic_probability": 0.0}), "dense": (dense, {})}


def check_arguments(args, base):
    if args.seeds < 1:
        raise SystemExit(f"error: --seeds must be a positive integer, got {args.seeds}")
    if args.lrs is not None and not all(lr > 0 and math.isfinite(lr) for lr in args.lrs):
        raise SystemExit(f"error: --lrs must be positive numbers, got {args.lrs}")
    mlp = OmegaConf.to_container(base.model, resolve=True).get("mlp")
    if (mlp.get("name") if isinstance(mlp, dict) else mlp) != "hpm":
        raise SystemExit(f"error: python -m zoo.bench hpm compares model.mlp=hpm with its anchor, got model.mlp={mlp}")
    if base.model.get("memory_layers") is not None:
        raise SystemExit(f"error: python -m zoo.bench hpm: the dense baseline widens every layer's MLP, so "
                         f"model.memory_layers must stay unset here, got {list(base.model.memory_layers)}")


def build_specs(base, lrs: list[float], seeds: int, out: Path) -> tuple[list, dict]:
    """The sweep's run specs and, per run key, its (model, lr, seed)."""
    memory = OmegaConf.to_container(base.model.mlp, resolve=True)
    specs, runs = [], {}
    for seed in range(seeds):
        for lr in lrs:
            for name, (mlp, task) in variants(memory, base.model.d_model).items():
                config = OmegaConf.to_container(base, resolve=True)
                config["model"]["mlp"] = mlp
                config["task"].update(task, seed=seed)
                config["seed"] = seed
                config["optim"]["lr"] = lr
                spec = train_spec(f"{name}-lr{lr:g}-seed{seed}", config, out)
                specs.append(spec)
                runs[spec.key] = (name, lr, seed)
    return specs, runs


def run(args) -> int:
    out = Path(args.out)
    base = compose_config([f"experiment={args.experiment}", *args.overrides])
    check_arguments(args, base)
    lrs = args.lrs or [float(base.optim.lr)]
    specs, runs = build_specs(base, lrs, args.seeds, out)
    executor = executor_from_args(args, out, default_workers=1)
    outcome = run_sweep(Sweep(f"hpm comparison ({args.experiment}): {', '.join(VARIANTS)} x {len(lrs)} lr x "
                              f"{args.seeds} seeds", specs, train_in_folder, out), executor, args.stop_after)
    if outcome.left:
        return report_stopped(outcome, args.stop_after)
    finished = [{"model": runs[r["key"]][0], "lr": runs[r["key"]][1], "seed": runs[r["key"]][2],
                 "result": r["result"]} for r in outcome.records]
    write_report(finished, out, chance=1 / base.task.values_per_attribute)
    return 0


def _mean_sd(values: list[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _cell(values: list[float]) -> str:
    mean, sd = _mean_sd(values)
    return f"{mean:.3f}" if sd is None else f"{mean:.3f} ± {sd:.3f}"


def choose_lrs(runs: list[dict]) -> dict[str, dict]:
    """Per model: the lr whose validation accuracy (mean over seeds) is best, and that mean, for every lr."""
    chosen = {}
    for name in VARIANTS:
        by_lr = {}
        for r in runs:
            if r["model"] == name:
                by_lr.setdefault(r["lr"], []).append(r["result"]["validation"]["best"])
        validation = {lr: sum(v) / len(v) for lr, v in sorted(by_lr.items())}
        chosen[name] = {"lr": max(validation, key=validation.get), "validation": validation}
    return chosen


def accuracies(runs: list[dict], chosen: dict) -> dict[str, dict[int, list[float]]]:
    """model -> seed -> test accuracy per bucket (then the mean over buckets), at the model's chosen lr."""
    table = {name: {} for name in VARIANTS}
    for r in runs:
        if r["lr"] == chosen[r["model"]]["lr"]:
            per_bucket = [s["accuracy"] for s in r["result"]["slices"]]
            table[r["model"]][r["seed"]] = per_bucket + [sum(per_bucket) / len(per_bucket)]
    return table


def table_rows(runs: list[dict], chosen: dict) -> list[dict]:
    """One row per frequency bucket and a mean row: each model's accuracy and the paired differences, as
    mean ± sd over seeds."""
    table = accuracies(runs, chosen)
    seeds = sorted(table["memory"])
    memory_runs = [r["result"] for r in runs if r["model"] == "memory" and r["lr"] == chosen["memory"]["lr"]]
    slices = memory_runs[0]["slices"]
    rows = []
    for i, info in enumerate([*slices, {"slice": "mean"}]):
        row = {"bucket": info["slice"]}
        if info["slice"] != "mean":
            row["probes"] = info["num_probes"]
            row["path_at_home"] = _cell([m["slices"][i]["path_at_home"] for m in memory_runs])
        for name in VARIANTS:
            row[name] = _cell([table[name][s][i] for s in seeds])
        for label, a, b in DIFFERENCES:
            row[label] = _cell([table[a][s][i] - table[b][s][i] for s in seeds])
        rows.append(row)
    return rows


def size_rows(runs: list[dict], chosen: dict) -> list[dict]:
    """Per model: its parameter counts as LM.size_report() gives them, the ratios to the memory's anchor, its lr."""
    sizes = {r["model"]: r["result"]["sizes"] for r in runs}
    anchor = sizes["memory"]["anchor"]
    rows = []
    for name in VARIANTS:
        s = sizes[name]
        rows.append({"model": name, "parameters": s["parameters"], "anchor": s.get("anchor", s["parameters"]),
                     "bank": s.get("bank", 0), "fetched": s.get("fetched", 0),
                     "active": s.get("active", s["parameters"]),
                     "bank/anchor": round(s.get("bank", 0) / anchor, 2),
                     "fetched/anchor": round(s.get("fetched", 0) / anchor, 3),
                     "active/anchor": round(s.get("active", s["parameters"]) / anchor, 3),
                     "lr (chosen on validation)": chosen[name]["lr"],
                     "validation by lr": ", ".join(f"{lr:g}: {v:.3f}" for lr, v in chosen[name]["validation"].items())})
    return rows


def write_report(runs: list[dict], out: Path, chance: float | None = None):
    chosen = choose_lrs(runs)
    rows, sizes = table_rows(runs, chosen), size_rows(runs, chosen)
    columns, size_columns = list(rows[0]), list(sizes[0])
    seeds = len({r["seed"] for r in runs})
    print(format_table(rows, columns))
    print(format_table(sizes, size_columns))
    environment = describe(torch.device("cpu"))
    write_json(out / "hpm_compare.json", {"rows": rows, "sizes": sizes, "chosen": chosen, "seeds": seeds,
                                          "runs": runs, "chance": chance, "environment": environment})
    path = write_markdown(out / "hpm_compare.md", rows, columns, environment)
    note = (f"Test accuracy, mean ± sd over {seeds} seed(s), each model at its lr chosen on validation. "
            "Sizes (LM.size_report()): bank = every memory-bank parameter (generic blocks included), fetched = the "
            "bank parameters one context uses, anchor = all parameters - bank; ratios to the memory's anchor.")
    size_table = ["| " + " | ".join(size_columns) + " |", "|" + "---|" * len(size_columns)]
    size_table += ["| " + " | ".join(str(row[c]) for c in size_columns) + " |" for row in sizes]
    path.write_text(path.read_text() + "\n" + note + "\n\n" + "\n".join(size_table) + "\n")
    write_csv(out / "hpm_compare.csv", rows, columns)
    plot(runs, chosen, out / "hpm_compare.png", chance)
    print(f"wrote {out}/hpm_compare.json, .md, .csv, .png")


def plot(runs: list[dict], chosen: dict, path: Path, chance: float | None = None):
    plt = pyplot()
    table = accuracies(runs, chosen)
    buckets = [s["slice"] for s in next(r for r in runs if r["model"] == "memory")["result"]["slices"]]
    sizes = {r["model"]: r["result"]["sizes"] for r in runs}
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(VARIANTS)
    for k, name in enumerate(VARIANTS):
        stats = [_mean_sd([per_seed[i] for per_seed in table[name].values()]) for i in range(len(buckets))]
        active = sizes[name].get("active", sizes[name]["parameters"])
        label = f"{name} ({active / 1e3:.0f}k active" + (f", {sizes[name]['bank'] / 1e3:.0f}k bank)"
                                                        if "bank" in sizes[name] else ")")
        ax.bar([i + (k - (len(VARIANTS) - 1) / 2) * width for i in range(len(buckets))], [m for m, _ in stats],
               width, yerr=[sd or 0 for _, sd in stats], capsize=2, label=label)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({chance:.3g}: one attribute's values)")
    ax.set_xticks(range(len(buckets)), buckets)
    ax.set_xlabel("how often the probed fact occurs in training (rare -> frequent)")
    ax.set_ylabel("test accuracy (mean ± sd over seeds)")
    ax.set_title("task=facts: accuracy per frequency bucket, each model at its validation-chosen lr")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
