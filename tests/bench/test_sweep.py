"""The sweep engine (zoo/bench/sweep.py) and its executors: finished runs are skipped, a killed sweep leaves no
process behind and resumes, and a run's result file does not depend on the executor or the worker count."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zoo.bench.__main__ import main
from zoo.bench.executors import LocalExecutor, RayExecutor, SubmititExecutor
from zoo.bench.recall import grid_runs
from zoo.bench.recall_grid import TEST
from zoo.bench.recall_runs import run_key, train_and_score
from zoo.bench.sweep import RunSpec, Sweep, run_sweep

ROOT = Path(__file__).resolve().parents[2]
MEASURED = ("params", "state_size", "val_slices", "val_mean_accuracy", "mean_accuracy", "slices", "threads")


def recall_spec(mixer: str = "short_conv") -> RunSpec:
    config = next(c for c in grid_runs(TEST, [mixer])[0])
    return RunSpec(run_key(config), config)


def measured(out: Path, spec: RunSpec) -> dict:
    record = json.loads((out / "runs" / f"{spec.key}.json").read_text())
    assert record["key"] == spec.key and record["config"] == spec.config
    return {name: record["result"][name] for name in MEASURED}


def counting_run(config: dict, device: str) -> dict:
    counting_run.calls.append(config["x"])
    return {"square": config["x"] ** 2}


counting_run.calls = []


def test_finished_runs_are_skipped_and_each_result_is_written(tmp_path):
    specs = [RunSpec(f"run{x}", {"x": x}) for x in range(3)]
    reported = []
    sweep = Sweep("squares", specs, counting_run, tmp_path, report=reported.append)
    counting_run.calls.clear()
    outcome = run_sweep(sweep, LocalExecutor(1))
    assert counting_run.calls == [0, 1, 2] and outcome.trained_now == 3 and outcome.left == 0
    assert [r["result"]["square"] for r in reported[0].records] == [0, 1, 4]
    (tmp_path / "runs" / "run1.json").unlink()
    counting_run.calls.clear()
    outcome = run_sweep(sweep, LocalExecutor(1))
    assert counting_run.calls == [1] and outcome.trained_now == 1 and len(outcome.records) == 3
    assert not list((tmp_path / "runs").glob("*.partial")), "results are written whole or not at all"


def signalling_run(config: dict, device: str) -> dict:
    """A run during which the sweep's own process gets SIGTERM (as from a scheduler), at run ``config['at']``."""
    if config["x"] == config["at"]:
        os.kill(os.getpid(), signal.SIGTERM)
    return {"square": config["x"] ** 2}


def test_a_signal_during_a_run_keeps_that_run_and_starts_no_other(tmp_path, capsys):
    """The engine's handler only remembers the signal; the run in flight (here in this process) ends and is
    written, no further run starts, and the sweep exits 143 with its resume line."""
    specs = [RunSpec(f"run{x}", {"x": x, "at": 1}) for x in range(4)]
    reported = []
    with pytest.raises(SystemExit) as stopped:
        run_sweep(Sweep("squares", specs, signalling_run, tmp_path, report=reported.append), LocalExecutor(1))
    assert stopped.value.code == 143
    assert sorted(p.name for p in (tmp_path / "runs").glob("*.json")) == ["run0.json", "run1.json"]
    assert not reported, "a stopped sweep writes no report"
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("stopped by SIGTERM: 2 of 4 runs done")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the handler before the sweep is back"


def test_a_signal_during_the_report_lets_it_finish_then_exits_143(tmp_path, capsys):
    specs = [RunSpec(f"run{x}", {"x": x, "at": -1}) for x in range(2)]
    written = []

    def report(outcome):
        os.kill(os.getpid(), signal.SIGTERM)
        written.append(len(outcome.records))

    with pytest.raises(SystemExit) as stopped:
        run_sweep(Sweep("squares", specs, signalling_run, tmp_path, report=report), LocalExecutor(1))
    assert stopped.value.code == 143 and written == [2]
    assert "stopped by SIGTERM after the report was written: 2 of 2 runs done" in capsys.readouterr().err


def _session_processes(session: int) -> list[int]:
    """Live processes of a session (the killed sweep's parent started it): its workers would be here."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def _start_and_kill(command, out):
    """Start the sweep, SIGTERM its parent once a run has finished; returns (parent, stderr, most processes at once)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen([sys.executable, "-m", "zoo.bench", *command], cwd=out, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    runs = out / "runs"
    deadline = time.monotonic() + 240
    most_at_once = 0  # counted while waiting: a worker whose run just finished may be gone at any one instant
    while not list(runs.glob("*.json")) and parent.poll() is None and time.monotonic() < deadline:
        most_at_once = max(most_at_once, len(_session_processes(parent.pid)))
        time.sleep(0.2)
    assert parent.poll() is None, f"the sweep ended before it was stopped: {parent.stderr.read()[-2000:]}"
    parent.send_signal(signal.SIGTERM)
    _, stderr = parent.communicate(timeout=60)
    return parent, stderr, most_at_once


# Runs of about 3 s each (the test preset's MQAR at 600 epochs): the kill lands while the first runs are being
# written and others train. With the MQAR sweep's sub-second runs, on a loaded machine the whole sweep could end
# before the test saw its first result, and the SIGTERM then met the report or a finished process.
KILLED_SWEEP = ["recall", "--preset", "test", "--suite", "--task", "mqar", "--epochs", "600",
                "--mixers", "attention,short_conv"]


def test_a_killed_sweep_leaves_no_process_keeps_its_runs_and_resumes(tmp_path):
    command = [*KILLED_SWEEP, "--out", str(tmp_path), "--workers", "2"]
    parent, stderr, most_at_once = _start_and_kill(command, tmp_path)
    assert most_at_once >= 3, "the parent and its two workers, at once"
    assert parent.returncode == 143, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("stopped by SIGTERM: ") and "resume with: python -m zoo.bench recall" in last, last
    time.sleep(0.5)
    assert _session_processes(parent.pid) == [], "no worker survives its sweep"
    runs = tmp_path / "runs"
    kept = {p.name: p.read_text() for p in runs.glob("*.json")}
    assert 0 < len(kept) < 4 and not list(runs.glob("*.partial"))

    assert main(command[:-1] + ["1"]) == 0  # the resumed sweep trains only what is missing
    summary = json.loads((tmp_path / "suite.json").read_text())
    assert summary["runs_trained_now"] == 4 - len(kept) and len(summary["runs"]) == 4
    assert {name: (runs / name).read_text() for name in kept} == kept


def test_a_run_gives_the_same_result_file_whatever_the_worker_count(tmp_path):
    specs = [recall_spec("short_conv"), recall_spec("attention")]
    run_sweep(Sweep("one", specs, train_and_score, tmp_path / "one"), LocalExecutor(1))
    run_sweep(Sweep("two", specs, train_and_score, tmp_path / "two"), LocalExecutor(2))
    for spec in specs:
        assert measured(tmp_path / "one", spec) == measured(tmp_path / "two", spec)


def test_submitit_local_executor_runs_a_spec_like_the_local_one(tmp_path):
    pytest.importorskip("submitit")
    spec = recall_spec()
    run_sweep(Sweep("local", [spec], train_and_score, tmp_path / "local"), LocalExecutor(1))
    executor = SubmititExecutor(tmp_path / "jobs", None, 10, 0, threads=1, cluster="local")
    outcome = run_sweep(Sweep("submitit", [spec], train_and_score, tmp_path / "submitit"), executor)
    assert outcome.trained_now == 1 and not outcome.failed
    assert measured(tmp_path / "submitit", spec) == measured(tmp_path / "local", spec)


def test_ray_local_instance_gives_the_same_result_file(tmp_path):
    pytest.importorskip("ray")  # the [ray] extra is large: CI leaves it out and this test skips
    spec = recall_spec()
    run_sweep(Sweep("local", [spec], train_and_score, tmp_path / "local"), LocalExecutor(1))
    outcome = run_sweep(Sweep("ray", [spec], train_and_score, tmp_path / "ray"), RayExecutor(None, 1, 0, 1))
    assert outcome.trained_now == 1 and not outcome.failed
    assert measured(tmp_path / "ray", spec) == measured(tmp_path / "local", spec)


@pytest.mark.parametrize("executor, package, extra", [("ray", "ray", "[ray]"), ("submitit", "submitit", "[slurm]")])
def test_a_missing_extra_fails_in_one_line_naming_the_install(tmp_path, monkeypatch, executor, package, extra):
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    with pytest.raises(SystemExit, match=rf"--executor {executor} needs {package}: pip install -e '\.{re.escape(extra)}'"):
        main(["recall", "--preset", "test", "--mixers", "short_conv", "--out", str(tmp_path), "--executor", executor])
    assert not list(tmp_path.iterdir()), "nothing is written before the extra is checked"



def test_hydra_multirun_runs_train_py_jobs_through_the_joblib_launcher(tmp_path):
    """train.py sweeps stay Hydra multiruns; Hydra's launchers (here joblib: two jobs at once) place the jobs."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    from tests.test_workflow import cli
    sweep = tmp_path / "sweep"
    done = cli("trainer.max_epochs=1", "optim.lr=1e-3,3e-3", f"hydra.sweep.dir={sweep}", "hydra/launcher=joblib",
               "hydra.launcher.n_jobs=2", flags=["-m"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Joblib" in done.stdout + done.stderr
    rows = (sweep / "sweep.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",done," in row for row in rows[1:])
