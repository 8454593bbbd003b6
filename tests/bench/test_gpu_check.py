"""The GPU check's phase driver on CPU, with fake phases: it goes on past failures and timeouts and records
them, packs DIR into one archive as files appear (so a killed phase keeps finished runs), and resumes from it.
The proof phase: its dry run lists every case with an estimate that fits 8 minutes, it refuses on a CPU in one
line, and its summary reads what the steps wrote."""
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time

import pytest
import torch

from zoo.bench import gpu, gpu_proof, gpu_table
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
    with pytest.raises(SystemExit, match="'fast' is not one of proof, peers, ops, mixers, test, speed, generation"):
        main(["gpu", "--phase", "fast"])
    with pytest.raises(SystemExit, match="no such archive"):
        main(["gpu", "--phase", "recall", "--resume", str(tmp_path / "missing.tar"), "--out", str(tmp_path / "g")])


def test_every_phase_fits_the_device_limit():
    phases = gpu.build_phases(gpu.REPO / "gpu_results")
    assert tuple(phases) == gpu.PHASE_NAMES
    for phase in phases.values():
        assert phase.cases and phase.estimate and phase.seconds <= gpu.PHASE_SECONDS
        assert all(case.seconds <= phase.seconds for case in phase.cases)
    assert gpu.PHASE_SECONDS < 600


# ---- the proof ------------------------------------------------------------------------------------------------------
PROOF_CASES = ["kernels-selective-scan", "kernels-linear-recurrence", "kernels-based", "kernels-running-topk",
               "kernels-fla-mixers", "kernels-ssd", "ops-selective-scan", "ops-linear-recurrence", "ops-based",
               "mixer-ops", "speed"]


def test_proof_dry_run_lists_every_case_with_an_estimate_within_8_minutes(capsys, tmp_path):
    assert main(["gpu", "--phase", "proof", "--dry-run", "--out", str(tmp_path / "g")]) == 0
    printed = capsys.readouterr().out
    positions = [printed.index(f"  {name} ") for name in PROOF_CASES]
    assert positions == sorted(positions)                     # kernels, then peers, then speed
    assert printed.count("basis: start") == len(PROOF_CASES)  # each estimate says what it rests on
    assert "fits the 480 s budget" in printed and "g-proof.tar" in printed
    phase = gpu.build_phases(tmp_path)["proof"]
    assert [c.name for c in phase.cases] == PROOF_CASES and all(c.estimate_s > 0 for c in phase.cases)
    assert gpu.estimated_total(phase) <= 8 * 60 == phase.seconds
    # still within 8 minutes once the five new mixers are registered too
    twelve = gpu_proof.proof_phase(tmp_path, [f"mixer{i}" for i in range(12)])
    assert gpu_proof.estimated_total(twelve) <= 8 * 60


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_proof_refuses_on_a_cpu_with_one_line(capsys, tmp_path):
    assert main(["gpu", "--phase", "proof", "--out", str(tmp_path / "g")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "needs" not in error and "CUDA GPU" in error and "--dry-run" in error
    assert not (tmp_path / "g").exists()


def test_a_missing_package_or_op_and_too_little_time_are_skipped_lines(tmp_path):
    phase = gpu.Phase("fake", "seconds", [
        gpu.Case("needs-a-package", [sys.executable, "-c", "pass"], 30, requires=("no_such_package_zoo",)),
        gpu.Case("needs-an-op", [sys.executable, "-c", "pass"], 30, requires=("op:no_such_op|nor_this",)),
        gpu.Case("one-of-two-ops", [sys.executable, "-c", "pass"], 30, requires=("op:no_such_op|based",)),
        gpu.Case("too-long", [sys.executable, "-c", "pass"], 30, estimate_s=500),
        gpu.Case("runs", [sys.executable, "-c", "import os; print(os.environ['ZOO_CASE_DEADLINE'])"], 30, estimate_s=1),
    ], seconds=60)
    record = gpu.run_phase(phase, tmp_path / "out", tmp_path / "a.tar")
    why = {c["case"]: (c["status"], c.get("why", "")) for c in record["cases"]}
    assert why["needs-a-package"] == ("skipped", "not installed: no_such_package_zoo")
    assert why["needs-an-op"] == ("skipped", "not installed: ops.no_such_op or ops.nor_this")
    assert why["one-of-two-ops"] == ("ok", "")
    assert why["too-long"][0] == "skipped" and "needs ~500 s" in why["too-long"][1]
    assert why["runs"] == ("ok", "") and record["failed"] == []
    assert record["skipped"] == ["needs-a-package", "needs-an-op", "too-long"]
    deadline = float((tmp_path / "out" / "runs.log").read_text())
    assert 0 < deadline - time.time() <= 60                    # a case can pace itself to its own limit


KILLED_DRIVER = """
import sys
from pathlib import Path
from zoo.bench import gpu
out, archive = Path(sys.argv[1]), Path(sys.argv[2])
phase = gpu.Phase("proof", "seconds", [
    gpu.Case("first", [sys.executable, "-c", "open(%r, 'w').write('done')" % str(out / 'first.json')], 30),
    gpu.Case("second", [sys.executable, "-c", "print('working', flush=True); import time; time.sleep(60)"], 60),
])
gpu.run_phase(phase, out, archive)
"""


def _members_so_far(archive):
    try:
        return _members(archive) if archive.exists() else set()
    except (tarfile.TarError, EOFError):  # caught in the middle of an append
        return set()


def test_the_archive_is_complete_after_each_case_and_survives_a_kill_mid_phase(tmp_path):
    out, archive = tmp_path / "out", tmp_path / "gpu-proof.tar"
    driver = subprocess.Popen([sys.executable, "-c", KILLED_DRIVER, str(out), str(archive)], cwd=gpu.REPO,
                              start_new_session=True, env=dict(os.environ, PYTHONPATH=str(gpu.REPO)))
    try:
        started = time.monotonic()
        while "proof.json" not in _members_so_far(archive):
            assert time.monotonic() - started < 30 and driver.poll() is None, "the first case never reached the archive"
            time.sleep(0.2)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)   # as the device tool does at its time limit: the driver and its case
        driver.wait()
    members = _members(archive)                 # a readable tar, with every finished case's files and the status
    assert {"first.json", "first.log", "proof.json"} <= members
    with tarfile.open(archive) as tar:
        status = json.loads(tar.extractfile("proof.json").read())
    assert [c["status"] for c in status["cases"]] == ["ok"]

    # the next call resumes: the case that passed is not run again
    fresh = tmp_path / "fresh"
    gpu.unpack(archive, fresh)
    phase = gpu.Phase("proof", "seconds", [gpu.Case("first", [sys.executable, "-c", "raise SystemExit(1)"], 30)])
    record = gpu.run_phase(phase, fresh, tmp_path / "again.tar")
    assert record["cases"][0]["status"] == "ok" and "earlier call" in record["cases"][0]["why"]


def test_the_summary_reads_the_steps_and_names_the_recorded_peer(tmp_path):
    (tmp_path / "ops-selective_scan").mkdir()
    (tmp_path / "proof.json").write_text(json.dumps({"notes": ["installed 4 wheels"], "cases": [
        {"case": "kernels-based", "status": "failed", "seconds": 9.0, "step": "1 kernels"},
        {"case": "kernels-ssd", "status": "skipped", "seconds": 0, "why": "not installed: ops.ssd"}]}))
    (tmp_path / "kernels-based.xml").write_text(textwrap.dedent("""\
        <testsuites><testsuite>
          <testcase name="test_based_attention[B2-T2048-H12]" time="1.5"/>
          <testcase name="test_based_attention[long]" time="2.0"><failure message="grad of input 0: error 0.3"/></testcase>
        </testsuite></testsuites>"""))
    shape = "B8 D1536 L2048 N16"
    (tmp_path / "ops-selective_scan" / "ops-1.json").write_text(json.dumps({"copy_bandwidth_Bps": 3.0e12, "rows": [
        {"op": "selective_scan", "shape": shape, "impl": "triton", "fwd_ms": 0.226, "fwd_bwd_ms": 1.137}]}))
    text = gpu_table.write_summary(tmp_path).read_text()
    assert "| kernels-based | test_based_attention[long] | failed | grad of input 0: error 0.3 |" in text
    assert "| kernels-ssd | (all) | skipped | not installed: ops.ssd |" in text
    assert f"| selective_scan | {shape} | {gpu_table.RECORDED_LABEL} | 0.452 | 2.274 |" in text
    assert "| triton vs the recorded mamba-ssm | - | - | - | recorded | 2 | 2 |" in text
    assert "ops-selective_scan: 3000 GB/s" in text and "## 3. Speed" in text


def test_the_recorded_mamba_ssm_timings_are_the_ones_in_docs_peers():
    peers = (gpu.REPO / "docs" / "peers.md").read_text()
    for shape, (fwd, both) in gpu_table.RECORDED_MAMBA_SSM_H100.items():
        assert any(shape in line and "mamba-ssm" in line and f"| {fwd} | {both} |" in line
                   for line in peers.splitlines()), shape


def test_the_speed_step_paces_itself_to_its_limit_and_keeps_attention_first(tmp_path, monkeypatch):
    from zoo.bench import gpu_speed, speed
    monkeypatch.setenv("ZOO_CASE_DEADLINE", str(time.time() + 3600))
    rows = gpu_speed.measure_all(["short_conv", "attention"], tmp_path, device="cpu", preset=speed.TEST)
    assert [(r["mixer"], r["status"]) for r in rows] == [("attention", "ok")] * 2 + [("short_conv", "ok")] * 2
    assert rows[2]["train_vs_attention"] is not None
    monkeypatch.setenv("ZOO_CASE_DEADLINE", str(time.time() + 5))   # less than one mixer's time: nothing starts
    rows = gpu_speed.measure_all(["short_conv"], tmp_path, per_mixer_s=60, device="cpu", preset=speed.TEST)
    assert [r["status"].split(":")[0] for r in rows] == ["skipped", "skipped"]
    assert json.loads((tmp_path / "speed.json").read_text())["rows"] == rows
