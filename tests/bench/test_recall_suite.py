"""python -m zoo.bench recall --suite / --task: outputs, lr chosen on validation, resumability, bad names."""
import csv
import json

import pytest

from zoo.bench.__main__ import main
from zoo.bench.recall_suite import resolve_selection, suite_runs
from zoo.bench.recall_suite_grid import CPU, GPU, TEST

TASKS = list(TEST.tasks)  # mqar, set_disjointness, induction


def suite(out, *extra):
    return main(["recall", "--suite", "--preset", "test", "--out", str(out), "--workers", "1", *extra])


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    assert suite(out, "--read-twice", "both") == 0
    return out


def test_outputs_one_table_and_a_grid_with_every_task_and_line(ran):
    summary = json.loads((ran / "suite.json").read_text())
    expected_runs = len(TASKS) * len(TEST.default_lines) * 2 * len(TEST.lrs)
    assert len(summary["runs"]) == expected_runs == len(list((ran / "runs").glob("*.json")))
    assert len(summary["best"]) == expected_runs // len(TEST.lrs)
    for best in summary["best"]:  # the chosen lr has the best validation accuracy of its grid
        same = [r for r in summary["runs"] if (r["task"], r["line"], r["read_twice"]) ==
                (best["task"], best["line"], best["read_twice"])]
        assert best["val_mean_accuracy"] == max(r["val_mean_accuracy"] for r in same)
    twice = {(r["task"], r["line"]): r["state_size"] for r in summary["runs"] if r["read_twice"]}
    once = {(r["task"], r["line"]): r["state_size"] for r in summary["runs"] if not r["read_twice"]}
    assert twice[("mqar", "attention")] > once[("mqar", "attention")]  # read twice: a longer input
    assert twice[("mqar", "short_conv")] == once[("mqar", "short_conv")]  # a fixed state
    table = (ran / "suite.md").read_text().splitlines()
    header = [c.strip() for c in table[4].strip("|").split("|")]
    assert header == ["line", "knobs", "read_twice", "state_size", *TASKS]
    assert len(table) == 6 + 2 * len(TEST.default_lines)
    with open(ran / "suite.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {"task", "line", "read_twice", "lr", "val_mean_accuracy", "mean_accuracy", "acc_A2_B4", "val_A2_B4"} <= set(rows[0])
    assert (ran / "suite.png").read_bytes().startswith(b"\x89PNG")


def test_a_second_run_trains_nothing_and_one_task_reuses_the_cache(ran, capsys):
    assert suite(ran, "--read-twice", "both") == 0
    assert json.loads((ran / "suite.json").read_text())["runs_trained_now"] == 0
    assert main(["recall", "--task", "induction", "--preset", "test", "--out", str(ran), "--workers", "1"]) == 0
    summary = json.loads((ran / "suite.json").read_text())
    assert summary["runs_trained_now"] == 0 and summary["tasks"] == ["induction"]


def test_unknown_task_or_line_fails_with_one_line(tmp_path):
    with pytest.raises(SystemExit, match="unknown suite task\\(s\\) 'copying'; suite tasks: mqar"):
        main(["recall", "--task", "copying", "--preset", "test", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="unknown suite line\\(s\\) 'transformer'"):
        main(["recall", "--suite", "--mixers", "transformer", "--preset", "test", "--out", str(tmp_path)])


def test_presets_cover_every_suite_task_and_mimetic_mamba():
    from zoo.tasks.recall_suite import SUITE_TASKS
    for preset in (CPU, GPU):
        assert set(SUITE_TASKS) | {"mqar"} == set(preset.tasks)
        assert preset.lines["mamba_mimetic"]["init"] == "mimetic"
        tasks, lines = resolve_selection(preset, None, None)
        assert len(suite_runs(preset, tasks, lines, (False, True))) == len(tasks) * len(lines) * 2 * len(preset.lrs)
