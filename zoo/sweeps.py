"""After a Hydra multirun: one table of every job's overrides and results, ``sweep.csv`` and ``sweep.md`` in
the sweep folder (a Hydra callback, registered in configs/train.yaml)."""
import csv
import json
from pathlib import Path

from hydra.experimental.callback import Callback

RESULT_FILE = "test_accuracy.json"  # zoo.train.RESULT_FILE (not imported: this module loads before any torch)


def job_row(job_dir: Path) -> dict:
    """The job's overrides, and its result or what became of it."""
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    overrides = []
    if overrides_file.exists():
        from omegaconf import OmegaConf
        overrides = list(OmegaConf.load(overrides_file))
    row = {"job": job_dir.name.split("_", 1)[0], "overrides": " ".join(overrides)}
    result_file = job_dir / RESULT_FILE
    if not result_file.exists():
        stopped = (job_dir / "checkpoints" / "last.ckpt").exists()
        return {**row, "status": "stopped (checkpoint saved)" if stopped else "failed"}
    result = json.loads(result_file.read_text())
    states = [entry["state_size"] for entry in result.get("slices", []) if entry.get("state_size") is not None]
    row.update(status="done", num_parameters=result.get("num_parameters"),
               state_size=max(states) if states else None,  # at the longest test input: the project's x-axis
               val_best=(result.get("validation") or {}).get("best"), mean_accuracy=result.get("mean_accuracy"))
    for entry in result.get("slices", []):
        row[f"acc_{entry['slice']}"] = entry.get("accuracy")
    return row


def write_table(sweep_dir: Path) -> list[dict]:
    jobs = sorted((p for p in Path(sweep_dir).iterdir() if (p / ".hydra").is_dir()),
                  key=lambda p: int(p.name.split("_", 1)[0]) if p.name.split("_", 1)[0].isdigit() else 1 << 30)
    rows = [job_row(job) for job in jobs]
    if not rows:
        return rows
    columns = list(dict.fromkeys(c for row in rows for c in row))
    with open(Path(sweep_dir) / "sweep.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    cell = lambda v: "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v).replace("|", "\\|"))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    (Path(sweep_dir) / "sweep.md").write_text("\n".join(lines) + "\n")
    return rows


class SweepTable(Callback):
    def on_multirun_end(self, config, **kwargs):
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir() and write_table(sweep_dir):
            print(f"sweep table: {sweep_dir / 'sweep.csv'}, {sweep_dir / 'sweep.md'}")
