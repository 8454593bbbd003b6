"""python -m zoo.bench recall --suite / --task: outputs, lr chosen on validation, resumability, bad names, the
read-twice settings."""
import csv
import json

import pytest

from zoo.bench.__main__ import main
from zoo.bench.recall_runs import run_key
from zoo.bench.recall_suite import parse_read_twice, resolve_selection, run_config, suite_runs
from zoo.bench.recall_suite_grid import CPU, GPU, TEST

TASKS = list(TEST.tasks)  # mqar, set_disjointness, induction
SETTINGS = ["off", "train_and_test", "test_only"]


def suite(out, *extra):
    return main(["recall", "--suite", "--preset", "test", "--out", str(out), "--workers", "1", *extra])


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    assert suite(out, "--read-twice", ",".join(SETTINGS)) == 0
    return out


def test_outputs_one_table_and_a_grid_with_every_task_and_line(ran):
    summary = json.loads((ran / "suite.json").read_text())
    expected_runs = len(TASKS) * len(TEST.default_lines) * len(SETTINGS) * len(TEST.lrs)
    assert len(summary["runs"]) == expected_runs == len(list((ran / "runs").glob("*.json")))
    assert len(summary["best"]) == expected_runs // len(TEST.lrs)
    for best in summary["best"]:  # the chosen lr has the best validation accuracy of its grid
        same = [r for r in summary["runs"] if (r["task"], r["line"], r["read_twice"]) ==
                (best["task"], best["line"], best["read_twice"])]
        assert best["val_mean_accuracy"] == max(r["val_mean_accuracy"] for r in same)
    state = {(r["task"], r["line"], r["read_twice"]): r["state_size"] for r in summary["runs"]}
    for doubled in ("train_and_test", "test_only"):  # evaluated read twice: a longer input
        assert state[("mqar", "attention", doubled)] > state[("mqar", "attention", "off")]
        assert state[("mqar", "short_conv", doubled)] == state[("mqar", "short_conv", "off")]  # a fixed state
    table = (ran / "suite.md").read_text().splitlines()
    header = [c.strip() for c in table[4].strip("|").split("|")]
    assert header == ["line", "knobs", "read_twice", "state_size", *TASKS]
    assert len(table) == 6 + len(SETTINGS) * len(TEST.default_lines)
    assert [row.split("|")[3].strip() for row in table[6:6 + len(SETTINGS)]] == SETTINGS
    with open(ran / "suite.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {"task", "line", "read_twice", "lr", "val_mean_accuracy", "mean_accuracy", "acc_A2_B4", "val_A2_B4"} <= set(rows[0])
    assert (ran / "suite.png").read_bytes().startswith(b"\x89PNG")


def test_a_second_run_trains_nothing_and_one_task_reuses_the_cache(ran, capsys):
    assert suite(ran, "--read-twice", "both") == 0  # the older name of off,train_and_test: the same runs
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


def test_read_twice_settings_have_their_own_runs_and_the_committed_keys_stay():
    tasks, lines = resolve_selection(CPU, ["mqar", "set_disjointness"], ["based_linear_attention", "mingru", "mamba"])
    runs = suite_runs(CPU, tasks, lines, tuple(SETTINGS), 6)
    keys = {run_key(config) for config in runs}
    assert len(runs) == len(keys) == 2 * 3 * len(SETTINGS) * len(CPU.lrs)
    assert [c["task"]["read_twice"] for c in runs[:3]] == [False, True, "test_only"]
    # off and train_and_test are written as the bools they were before test_only, so committed run files
    # (results/read-twice-cpu/runs/<key>.json) are still found
    assert run_key(run_config(CPU, "set_disjointness", "mamba", 3e-3, "off", 6)) == "3d4f8911b6c685a6"
    assert run_key(run_config(CPU, "set_disjointness", "mamba", 3e-3, "train_and_test", 6)) == "9f2328ae112d567f"
    assert run_config(CPU, "mqar", "mamba", 3e-3, True, 6) == run_config(CPU, "mqar", "mamba", 3e-3, "train_and_test", 6)


@pytest.mark.parametrize("text, settings", [("off", ("off",)), ("on", ("train_and_test",)),
                                            ("both", ("off", "train_and_test")),
                                            ("test_only,off,test_only", ("test_only", "off"))])
def test_read_twice_flag_takes_settings_and_the_older_names(text, settings):
    assert parse_read_twice(text) == settings


def test_an_unknown_read_twice_setting_fails_with_one_line(tmp_path):
    with pytest.raises(SystemExit, match="--read-twice: unknown setting 'twice'; settings: off, train_and_test, "
                                         "test_only") as error:
        suite(tmp_path, "--read-twice", "off,twice")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "runs").exists()
