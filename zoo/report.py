"""Tables, JSON and plots: the forms every benchmark result is written in (a Markdown copy of the table, with
the command and the machine, is what goes into the README)."""
import csv
import json
from pathlib import Path


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A plain fixed-width table; floats get 4 significant digits, missing cells a dash."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(v.rjust(w) for v, w in zip(values, widths))
    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells])


def write_markdown(path: Path, rows: list[dict], columns: list[str], environment: dict) -> Path:
    """The table as Markdown, headed by the command that made it and the machine it ran on."""
    versions = ", ".join(f"{name} {environment[name]}" for name in ("torch", "triton", "mamba_ssm", "fla")
                         if environment.get(name))
    lines = [f"`{environment['command']}`", "",
             f"{environment['device_name']} ({environment['device']}), {versions}, {environment['time']}", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)).replace("|", "\\|") for c in columns) + " |" for row in rows]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    """Rows as CSV; the columns default to every key of the rows, in the order first seen."""
    columns = columns or list(dict.fromkeys(c for row in rows for c in row))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_json(path: Path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def pyplot():
    """matplotlib with a file-only backend (benchmarks run on headless machines)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
