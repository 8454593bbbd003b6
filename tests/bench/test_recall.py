"""python -m zoo.bench recall: outputs and their fields, resumability, determinism, the grid, bad names."""
import csv
import json
from pathlib import Path

import pytest

from zoo.bench.__main__ import main
from zoo.bench import recall_runs
from zoo.bench.recall import flat_row, frontier, grid_runs, run_key
from zoo.bench.recall_grid import CPU, GPU, TEST, Preset, line_name
from zoo.bench.choices import registered_mixers

MIXERS = "attention,short_conv"  # fixed, so the test stays small however many mixers are registered
# TEST knobs: attention {} and window 4; short_conv has none (default sweep); one d_model, two lrs
EXPECTED_RUNS = 6


def recall(out, *extra):
    return main(["recall", "--preset", "test", "--mixers", MIXERS, "--out", str(out), "--workers", "1", *extra])


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("recall")
    assert recall(out) == 0
    return out


def test_writes_json_csv_png_with_the_expected_fields(swept):
    summary = json.loads((swept / "recall.json").read_text())
    assert summary["environment"]["command"] and summary["environment"]["torch"]
    assert summary["preset"]["name"] == "test"
    assert len(summary["runs"]) == EXPECTED_RUNS
    slices = [f"L{L}_kv{kv}" for L, kv, _ in TEST.test_segments]
    for row in summary["runs"]:
        for column in ("mixer", "knobs", "d_model", "lr", "params", "state_size", "mean_accuracy", "best_lr"):
            assert column in row
        accuracies = [row[f"acc_{s}"] for s in slices]
        assert all(0.0 <= a <= 1.0 for a in accuracies)
        assert row["mean_accuracy"] == pytest.approx(sum(accuracies) / len(accuracies))
        assert row["state_size"] == row[f"state_{slices[-1]}"]  # the longest test length
        assert row["params"] > 0
    attention = [r for r in summary["runs"] if r["line"] == "attention"]
    window = [r for r in summary["runs"] if r["line"] == "sliding_window_attention"]
    assert attention and window and attention[0]["state_size"] > window[0]["state_size"]
    # one best lr per (mixer, knobs, d_model), and it is the best of its lr grid on validation
    points = {(r["mixer"], r["knobs"], r["d_model"]) for r in summary["runs"]}
    assert len(summary["best"]) == len(points) == EXPECTED_RUNS // len(TEST.lrs)
    for best in summary["best"]:
        same = [r for r in summary["runs"] if (r["mixer"], r["knobs"], r["d_model"]) ==
                (best["mixer"], best["knobs"], best["d_model"])]
        assert best["val_mean_accuracy"] == max(r["val_mean_accuracy"] for r in same)
    for record in map(json.loads, map(Path.read_text, (swept / "runs").glob("*.json"))):
        validation = record["result"]["val_slices"]
        assert set(validation) == set(slices) and all(0.0 <= a <= 1.0 for a in validation.values())

    with open(swept / "recall.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == EXPECTED_RUNS
    assert {"mixer", "knobs", "d_model", "lr", "params", "state_size", "mean_accuracy", f"acc_{slices[0]}",
            f"state_{slices[0]}"} <= set(rows[0])
    png = (swept / "recall.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert len(list((swept / "runs").glob("*.json"))) == EXPECTED_RUNS
    table = (swept / "recall.md").read_text().splitlines()
    assert table[0] == f"`{summary['environment']['command']}`"
    header = [c.strip() for c in table[4].strip("|").split("|")]
    assert header[:7] == ["line", "knobs", "d_model", "lr", "params", "state_size", "mean_accuracy"]
    assert header[7:] == [f"acc_{s}" for s in slices]
    assert len(table) == 6 + len(summary["best"])  # command, blank, machine, blank, header, rule, a row per point


def test_a_second_run_reruns_nothing_and_a_missing_run_is_redone_identically(swept, capsys):
    run_files = sorted((swept / "runs").glob("*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in run_files}
    assert recall(swept) == 0
    assert json.loads((swept / "recall.json").read_text())["runs_trained_now"] == 0
    assert f"{EXPECTED_RUNS} already done" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in run_files} == stamps

    # deterministic per seed: a deleted run comes back with the same accuracies
    victim = run_files[0]
    before = json.loads(victim.read_text())["result"]
    victim.unlink()
    assert recall(swept) == 0
    assert json.loads((swept / "recall.json").read_text())["runs_trained_now"] == 1
    after = json.loads(victim.read_text())["result"]
    assert after["slices"] == before["slices"]


@pytest.mark.parametrize("workers", [1, 2])
def test_stop_after_trains_what_fits_and_the_same_command_goes_on(tmp_path, workers, capsys):
    """--stop-after (minutes): no run starts after it, at least one finishes, the outputs say how many are left."""
    command = ["recall", "--preset", "test", "--mixers", MIXERS, "--out", str(tmp_path), "--workers", str(workers)]
    assert main(command + ["--stop-after", "0"]) == 0
    partial = json.loads((tmp_path / "recall.json").read_text())
    # the first run to finish, and with a pool the runs already in flight then (one per worker)
    assert 1 <= partial["runs_trained_now"] == len(partial["runs"]) <= workers
    assert partial["runs_left"] == EXPECTED_RUNS - len(partial["runs"]) > 0
    assert f"{partial['runs_left']} runs left" in capsys.readouterr().out
    assert main(command) == 0
    whole = json.loads((tmp_path / "recall.json").read_text())
    assert whole["runs_left"] == 0 and len(whole["runs"]) == EXPECTED_RUNS
    assert whole["runs_trained_now"] == EXPECTED_RUNS - len(partial["runs"])


def test_parallel_workers_write_every_run(tmp_path):
    """The CPU default: runs spread over processes of one thread each, each written as it finishes."""
    assert main(["recall", "--preset", "test", "--mixers", "short_conv", "--out", str(tmp_path), "--workers", "2"]) == 0
    summary = json.loads((tmp_path / "recall.json").read_text())
    assert summary["runs_trained_now"] == len(summary["runs"]) == len(TEST.lrs)
    assert all(json.loads(p.read_text())["result"]["threads"] >= 1 for p in (tmp_path / "runs").glob("*.json"))
    assert len(list((tmp_path / "runs").glob("*.json"))) == len(TEST.lrs)


def test_unknown_mixer_and_preset_fail_listing_the_known(tmp_path):
    with pytest.raises(SystemExit, match=r"unknown mixer.*'nope'.*registered mixers: .*attention"):
        main(["recall", "--preset", "test", "--mixers", "attention,nope", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"unknown recall preset 'huge'.*known presets: cpu, gpu"):
        main(["recall", "--preset", "huge", "--out", str(tmp_path)])
    assert not list(tmp_path.iterdir()), "nothing is written before the names are checked"


def test_grid_covers_every_registered_mixer_and_notes_skipped_and_defaulted_names():
    preset = Preset(name="t", description="", vocab_size=64, train_segments=((16, 2, 8),),
                    test_segments=((16, 2, 8),), batch_size=8, max_epochs=1, lrs=(1e-3, 1e-2), d_models=(16, 32),
                    knobs={"attention": [{"window": 4, "d_models": [16]}], "not_a_mixer": [{"x": 1}]})
    mixers = registered_mixers()
    runs, notes = grid_runs(preset, mixers)
    assert {r["mixer"] for r in runs} == set(mixers)
    assert any("not_a_mixer" in n and "skipped" in n for n in notes)
    assert any(n.startswith("short_conv") and "default" in n for n in notes)
    attention = [r for r in runs if r["mixer"] == "attention"]
    assert [(r["knobs"], r["d_model"], r["lr"]) for r in attention] == [({"window": 4}, 16, 1e-3),
                                                                        ({"window": 4}, 16, 1e-2)]
    short_conv = [r for r in runs if r["mixer"] == "short_conv"]
    assert sorted((r["d_model"], r["lr"]) for r in short_conv) == [(16, 1e-3), (16, 1e-2), (32, 1e-3), (32, 1e-2)]
    for r in runs:  # zoology's pairing: a short convolution, then the mixer with its knobs
        assert r["model"]["layers"] == [{"name": "short_conv", "kernel_size": 3}, {"name": r["mixer"], **r["knobs"]}]
    assert len({run_key(r) for r in runs}) == len(runs), "every run has its own file"


def test_hash_changes_with_anything_that_changes_the_result():
    base = grid_runs(TEST, ["attention"])[0][0]
    for key, value in (("lr", 0.5), ("d_model", 99), ("seed", 7)):
        assert run_key({**base, key: value}) != run_key(base)
    assert run_key({**base, "task": {**base["task"], "vocab_size": 65}}) != run_key(base)


def test_public_presets_follow_the_protocol():
    for preset in (CPU, GPU):
        longest_train = max(L for L, _, _ in preset.train_segments)
        longest_test = max(L for L, _, _ in preset.test_segments)
        assert longest_test >= 2 * longest_train, "tests extrapolate to longer sequences"
        assert len(preset.lrs) >= 2 and {"attention", "short_conv"} <= set(preset.knobs)
        assert all(preset.vocab_size > L and 4 * kv <= L for L, kv, _ in preset.train_segments + preset.test_segments)
    assert GPU.vocab_size == 8192 and max(L for L, _, _ in GPU.test_segments) == 1024


def lr_record(lr, val, test, d_model=16):
    config = {"mixer": "attention", "knobs": {}, "d_model": d_model, "lr": lr}
    result = {"params": 1, "state_size": 2, "val_mean_accuracy": val, "mean_accuracy": test, "train_seconds": 0.0,
              "slices": [{"slice": "L16_kv2", "accuracy": test, "state_size": 2}]}
    return {"key": f"{lr}-{d_model}", "config": config, "result": result}


def summarise(records):
    return recall_runs.summarise(records, flat_row, lambda row: (row["mixer"], row["knobs"], row["d_model"]),
                                 "best_lr", "cpu")


def test_best_lr_is_the_highest_mean_validation_accuracy_per_point():
    summary = summarise([lr_record(1e-3, 0.2, 0.2), lr_record(1e-2, 0.9, 0.9), lr_record(1e-1, 0.5, 0.5),
                               lr_record(1e-3, 0.4, 0.4, 32)])
    assert sorted((r["d_model"], r["lr"]) for r in summary["best"]) == [(16, 1e-2), (32, 1e-3)]


def test_the_lr_choice_does_not_read_test_metrics():
    """Validation prefers 1e-3, test would prefer 1e-2: validation wins, and any test numbers give the same choice."""
    choose = lambda records: [(r["d_model"], r["lr"]) for r in summarise(records)["best"]]
    chosen = choose([lr_record(1e-3, 0.8, 0.1), lr_record(1e-2, 0.3, 0.95)])
    assert chosen == [(16, 1e-3)]
    for tests in ((0.0, 1.0), (1.0, 0.0), (float("nan"), float("nan"))):
        assert choose([lr_record(1e-3, 0.8, tests[0]), lr_record(1e-2, 0.3, tests[1])]) == chosen
    assert line_name("attention", {"window": 8}) == "sliding_window_attention" != line_name("attention", {})
    assert line_name("co4", {"latent_mode": "static"}) == "co4_static" != line_name("co4", {"latent_mode": "prefix"})


def test_frontier_is_the_running_best_over_state_size():
    assert frontier([(10, 0.5), (1, 0.2), (5, 0.1), (20, 0.4)]) == [(1, 0.2), (5, 0.2), (10, 0.5), (20, 0.5)]
