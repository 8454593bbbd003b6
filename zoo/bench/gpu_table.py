"""The GPU proof's summary, ``proof.md``: what ran and what was skipped, each real-size kernel test's outcome,
each kernel against its peer measured in the same run (or, where mamba-ssm is not installed, against its
recorded H100 timings, said so in the row), the fraction of the HBM floor, and the short speed table.

Reads only the files the proof's steps wrote (JSON and pytest's JUnit XML), so it runs without torch, also on a
CPU over an archive brought back:  python -m zoo.bench.gpu_table DIR
"""
import json
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

# mamba-ssm 2.3.2's CUDA selective_scan_fn on one H100, bf16, do_bench median: docs/peers.md "Peer timings on one
# H100" (a test keeps the two in step). Shape -> (fwd ms, fwd+bwd ms).
RECORDED_MAMBA_SSM_H100 = {
    "B8 D1536 L2048 N16": (0.452, 2.274),
    "B2 D1536 L8192 N16": (0.539, 2.466),
    "B8 D1536 L2048 N64": (1.496, 8.438),
}
RECORDED_LABEL = "mamba-ssm CUDA (recorded on an H100, docs/peers.md: not installed in this run)"
OPS_COLUMNS = ["op", "shape", "impl", "fwd_ms", "fwd_bwd_ms", "fwd_floor_frac", "vs_peer", "fwd_speedup",
               "fwd_bwd_speedup", "status"]
SPEED_COLUMNS = ["mixer", "batch", "seq_len", "train_tok_s", "train_vs_attention", "decode_tok_s",
                 "decode_vs_attention", "status"]


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value).replace("|", "\\|")


def markdown_table(rows: list[dict], columns: list[str]) -> list[str]:
    return (["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            + ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows])


def kernel_test_rows(out: Path, record: dict) -> list[dict]:
    """One row per test from each pytest case's JUnit file; a case without one (stopped, skipped) is one row."""
    rows = []
    for case in record.get("cases", []):
        if not case["case"].startswith("kernels-"):
            continue
        report = out / f"{case['case']}.xml"
        if not report.is_file():
            rows.append({"case": case["case"], "test": "(all)", "outcome": case["status"],
                         "detail": case.get("why") or f"no JUnit file: see {case['case']}.log"})
            continue
        for test in ElementTree.parse(report).getroot().iter("testcase"):
            outcome, detail = "passed", f"{float(test.get('time', 0)):.1f} s"
            for tag in ("failure", "error", "skipped"):
                found = test.find(tag)
                if found is not None:
                    outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                    detail = (found.get("message") or "").splitlines()[0][:160] if found.get("message") else ""
            rows.append({"case": case["case"], "test": test.get("name"), "outcome": outcome, "detail": detail})
    return rows


def with_recorded_peer(rows: list[dict]) -> list[dict]:
    """The selective-scan rows, plus mamba-ssm's recorded timings at each anchor shape where it did not run, and
    the ratio of our kernel to them (recorded on another run: a pointer, not a same-run measurement)."""
    result = []
    for shape in dict.fromkeys(r["shape"] for r in rows):
        group = [r for r in rows if r["shape"] == shape]
        result += group
        recorded = RECORDED_MAMBA_SSM_H100.get(shape)
        if recorded is None or any(r["impl"] == "mamba-ssm" for r in group):
            continue
        fwd, both = recorded
        result.append({"op": "selective_scan", "shape": shape, "impl": RECORDED_LABEL, "fwd_ms": fwd,
                       "fwd_bwd_ms": both})
        for row in group:
            if row["impl"] == "triton":
                result.append({"op": "selective_scan", "shape": shape, "impl": "triton vs the recorded mamba-ssm",
                               "vs_peer": "recorded", "fwd_speedup": fwd / row["fwd_ms"],
                               "fwd_bwd_speedup": both / row["fwd_bwd_ms"] if row.get("fwd_bwd_ms") else None})
    return result


def ops_rows(out: Path) -> tuple[list[dict], list[str]]:
    rows, bandwidths = [], []
    for path in sorted(out.glob("ops-*/ops-*.json")):
        data = json.loads(path.read_text())
        bandwidths.append(f"{path.parent.name}: {data['copy_bandwidth_Bps'] / 1e9:.0f} GB/s")
        found = data.get("rows", [])
        scan = [r for r in found if r["op"] == "selective_scan"]
        rows += [r for r in found if r["op"] != "selective_scan"] + with_recorded_peer(scan)
    return rows, bandwidths


def write_summary(out: Path) -> Path:
    """out/proof.md from what the proof wrote under ``out``."""
    status_path = out / "proof.json"
    record = json.loads(status_path.read_text()) if status_path.is_file() else {"cases": [], "notes": []}
    lines = ["# GPU proof", "", "Made by `python -m zoo.bench gpu --phase proof`; every number below was measured in "
             "this run unless its row says recorded.", ""]
    lines += [f"- note: {note}" for note in record.get("notes", [])]
    steps = [dict(case, why=case.get("why") or (f"return code {case.get('returncode')}: see {case['case']}.log"
                                                 if case["status"] in ("failed", "timeout") else None))
             for case in record.get("cases", [])]
    lines += ["", "## Steps", ""] + markdown_table(steps, ["step", "case", "status", "seconds", "why"])
    lines += ["", "## 1. Kernels at real sizes (compiled, NaN-filled buffers, bf16, up to T=16k)", ""]
    lines += markdown_table(kernel_test_rows(out, record), ["case", "test", "outcome", "detail"])
    rows, bandwidths = ops_rows(out)
    lines += ["", "## 2. Kernels against their peers", "",
              f"Copy bandwidth (read + write) measured in each process: {'; '.join(bandwidths) or 'none'}. "
              "fwd_floor_frac = ideal ms at that bandwidth / measured ms; speedup = peer ms / this ms.", ""]
    lines += markdown_table(rows, OPS_COLUMNS)
    mixer_ops = out / "mixer-ops" / "mixer-ops.json"
    if mixer_ops.is_file():
        lines += ["", "New mixers' peer kernels (through ops.<name>):", ""]
        lines += markdown_table(json.loads(mixer_ops.read_text())["rows"],
                                ["op", "shape", "impl", "fwd_ms", "fwd_bwd_ms", "fwd_floor_frac", "status"])
    speed = out / "speed" / "speed.json"
    lines += ["", "## 3. Speed: LM d_model 768 x 4 layers, bf16, 16k tokens per step", ""]
    lines += markdown_table(json.loads(speed.read_text())["rows"], SPEED_COLUMNS) if speed.is_file() else ["(not run)"]
    path = out / "proof.md"
    path.write_text("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        raise SystemExit("usage: python -m zoo.bench.gpu_table DIR  (a folder the GPU proof wrote)")
    print(f"wrote {write_summary(Path(sys.argv[1]))}")
