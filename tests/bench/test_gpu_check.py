"""The GPU check's phase driver on CPU, with fake phases: it goes on past failures and timeouts and records
them, packs DIR into one archive as files appear (so a killed phase keeps finished runs), and resumes from it."""
import json
import sys
import tarfile

import pytest

from zoo.bench import gpu
from zoo.bench.__main__ import main


def _members(archive):
    with tarfile.open(archive) as tar:
        return {m.name for m in tar.getmembers()}


def test_failures_and_timeouts_are_recorded_and_the_phase_goes_on(tmp_path):
    out, archive = tmp_path / "out", tmp_path / "check.tar"
    phase = gpu.Phase("fake", "seconds", [
        gpu.Case("fails", [sys.executable, "-c", "print('building...'); print('error: nvcc not found'); raise SystemExit(3)"], 30),
        gpu.Case("hangs", [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"], 2),
        gpu.Case("writes", [sys.executable, "-c", f"open({str(out / 'result.json')!r}, 'w').write('{{}}')"], 30),
    ])
    record = gpu.run_phase(phase, out, archive)
    status = {case["case"]: case for case in record["cases"]}
    assert status["fails"]["status"] == "failed" and status["fails"]["returncode"] == 3
    assert "error: nvcc not found" in status["fails"]["tail"]          # the log tail, not swallowed
    assert status["hangs"]["status"] == "timeout" and "started" in status["hangs"]["tail"]
    assert status["writes"]["status"] == "ok"
    assert record["failed"] == ["fails", "hangs"]
    assert json.loads((out / "fake.json").read_text())["failed"] == ["fails", "hangs"]
    assert {"fails.log", "hangs.log", "writes.log", "result.json", "fake.json"} <= _members(archive)
    assert "failed: fails, hangs" in gpu.format_status(record)


def test_the_phase_ends_by_its_deadline_and_skips_what_no_longer_fits(tmp_path):
    phase = gpu.Phase("fake", "seconds", [
        gpu.Case("long", [sys.executable, "-c", "import time; time.sleep(60)"], 60),
        gpu.Case("after", [sys.executable, "-c", "pass"], 60),
    ])
    record = gpu.run_phase(phase, tmp_path / "out", tmp_path / "a.tar", phase_seconds=8)
    assert [c["status"] for c in record["cases"]] == ["timeout", "skipped"]
    assert record["cases"][0]["seconds"] < 20


WRITE_RUNS = """
import pathlib, sys, time
runs = pathlib.Path(sys.argv[1]); runs.mkdir(parents=True, exist_ok=True)
for i in range(3):
    if not (runs / f"run{i}.json").exists():
        (runs / f"run{i}.json").write_text(str(i)); time.sleep(6)
time.sleep(60)
"""


def test_watched_files_enter_the_archive_as_they_appear_and_a_later_call_resumes(tmp_path):
    out, archive = tmp_path / "out", tmp_path / "recall.tar"
    # killed by its limit after 3 runs: every run file is in the archive already
    case = gpu.Case("sweep", [sys.executable, "-c", WRITE_RUNS, str(out / "runs")], 14, watch="runs")
    record = gpu.run_phase(gpu.Phase("recall", "seconds", [case]), out, archive)
    assert record["cases"][0]["status"] == "timeout"
    assert {"runs/run0.json", "runs/run1.json", "runs/run2.json"} <= _members(archive)

    # a fresh machine: the archive brought back resumes into an empty DIR, and no run is written twice
    fresh = tmp_path / "fresh"
    assert gpu.unpack(archive, fresh) >= 3
    started = {p.name: p.stat().st_mtime for p in (fresh / "runs").iterdir()}
    case = gpu.Case("sweep", [sys.executable, "-c", WRITE_RUNS.replace("time.sleep(60)", ""), str(fresh / "runs")], 30,
                    watch="runs")
    record = gpu.run_phase(gpu.Phase("recall", "seconds", [case]), fresh, tmp_path / "recall2.tar")
    assert record["failed"] == []
    assert {p.name: p.stat().st_mtime for p in (fresh / "runs").iterdir()} == started


def test_command_line_dry_run_and_bad_phase(capsys, tmp_path):
    assert main(["gpu", "--phase", "recall", "--dry-run", "--out", str(tmp_path / "g")]) == 0
    printed = capsys.readouterr().out
    assert "zoo.bench recall --preset gpu" in printed and "g-recall.tar" in printed
    with pytest.raises(SystemExit, match="'fast' is not one of test, peers, ops, speed, recall"):
        main(["gpu", "--phase", "fast"])
    with pytest.raises(SystemExit, match="no such archive"):
        main(["gpu", "--phase", "recall", "--resume", str(tmp_path / "missing.tar"), "--out", str(tmp_path / "g")])


def test_every_phase_fits_the_device_limit():
    for phase in gpu.build_phases(gpu.REPO / "gpu_results").values():
        assert phase.cases and phase.estimate
        assert all(case.seconds <= gpu.PHASE_SECONDS for case in phase.cases)
    assert gpu.PHASE_SECONDS < 600
