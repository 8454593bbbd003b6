"""The sweep engine under every bench sweep (the MQAR sweep, the recall suite, the memory and text comparisons).

A sweep is a list of run specs (a key naming the result file, the run's config, its device) and one run function
``run(config, device) -> result`` (a module-level function, so that every executor can ship it). The engine skips
the specs whose result file ``OUT/runs/<key>.json`` exists, runs the rest through an executor, writes each result
as it finishes (atomically: a killed sweep never leaves half a file), and hands every finished record to the
sweep's own report. A run's result depends on its config alone: each run sets its intra-op threads (one unless
told) and its seeds, whatever executor or worker count runs it.

Executors (zoo/bench/executors.py): ``local`` (processes on this machine), ``ray`` (each run a Ray task) and
``submitit`` (each run a SLURM job). SIGTERM or SIGINT stops every worker, keeps the finished runs, prints the
command that resumes and exits 143 / 130.
"""
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from zoo.bench.environment import command_line, describe
from zoo.report import write_json

@dataclass(frozen=True)
class RunSpec:
    key: str        # names the result file OUT/runs/<key>.json: a hash of everything that sets the result
    config: dict    # what the run function needs (plain JSON values)
    device: str = "cpu"


@dataclass
class Sweep:
    title: str                                   # printed first, e.g. "recall preset cpu"
    specs: list[RunSpec]
    run: Callable[[dict, str], dict]             # a module-level function: (config, device) -> result dict
    out: Path
    report: Callable[["Outcome"], None] | None = None   # the sweep's tables and plots, from every finished run


@dataclass
class Outcome:
    records: list[dict]                          # every finished run of the sweep ({key, config, result, device})
    trained_now: int = 0
    failed: list[str] = field(default_factory=list)   # "key: error" of runs that raised
    left: int = 0                                # runs with no result file (failed or not started)


class SweepInterrupted(Exception):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def result_path(out: Path, key: str) -> Path:
    return Path(out) / "runs" / f"{key}.json"


def load_records(out: Path, specs: list[RunSpec]) -> list[dict]:
    """The finished runs among ``specs``, in spec order."""
    paths = (result_path(out, spec.key) for spec in specs)
    return [json.loads(path.read_text()) for path in paths if path.exists()]


def write_record(out: Path, spec: RunSpec, result: dict) -> Path:
    """``{key, config, result, device}`` written through a temporary file, so a kill mid-write leaves no file."""
    path = result_path(out, spec.key)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    write_json(partial, {"key": spec.key, "config": spec.config, "result": result, "device": describe(spec.device)})
    partial.replace(path)
    return path


def run_one(run: Callable[[dict, str], dict], spec: RunSpec, threads: int) -> dict:
    """What every executor calls for a run: its own intra-op threads, then the run function."""
    import torch
    torch.set_num_threads(threads)
    return run(spec.config, spec.device)


def run_sweep(sweep: Sweep, executor, stop_after_minutes: float | None = None) -> Outcome:
    """Run the missing runs of ``sweep`` through ``executor``, then its report; on SIGTERM/SIGINT stop every
    worker, keep what finished, print the resuming command and exit 143/130."""
    (Path(sweep.out) / "runs").mkdir(parents=True, exist_ok=True)
    pending = [spec for spec in sweep.specs if not result_path(sweep.out, spec.key).exists()]
    print(f"{sweep.title}: {len(sweep.specs)} runs, {len(sweep.specs) - len(pending)} already done, "
          f"{executor.describe(len(pending))}, writing to {sweep.out}", flush=True)
    deadline = None if stop_after_minutes is None else time.monotonic() + 60 * stop_after_minutes
    outcome = Outcome(records=[])
    from tqdm import tqdm
    progress = tqdm(total=len(pending), desc="runs", unit="run")
    _stop.received = None
    previous = {s: signal.signal(s, _stop.remember) for s in STOP_SIGNALS}
    try:
        try:
            for spec, result, error in executor.run(sweep.run, pending, deadline):
                if error is None:
                    write_record(sweep.out, spec, result)
                    outcome.trained_now += 1
                else:
                    outcome.failed.append(f"{spec.key}: {error}")
                    print(f"run {spec.key} failed: {error}", file=sys.stderr, flush=True)
                progress.update()
        except SweepInterrupted as stop:
            for s in STOP_SIGNALS:
                signal.signal(s, signal.SIG_IGN)  # a second signal must not cut the clean-up short
            executor.stop()
            progress.close()
            done = len(load_records(sweep.out, sweep.specs))
            print(f"stopped by {stop}: {done} of {len(sweep.specs)} runs done (kept in {Path(sweep.out) / 'runs'}); "
                  f"resume with: {command_line()}", file=sys.stderr, flush=True)
            raise SystemExit(128 + stop.signum)
        progress.close()
        outcome.records = load_records(sweep.out, sweep.specs)
        outcome.left = len(sweep.specs) - len(outcome.records)
        if sweep.report is not None:
            sweep.report(outcome)
        if _stop.received:  # came while the report was written: it is whole, and every run is kept
            name = signal.Signals(_stop.received).name
            print(f"stopped by {name} after the report was written: {len(outcome.records)} of {len(sweep.specs)} "
                  f"runs done; the same command goes on: {command_line()}", file=sys.stderr, flush=True)
            raise SystemExit(128 + _stop.received)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return outcome


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _StopRequest:
    """What a SIGTERM / SIGINT during a sweep leaves: the signal, remembered and acted on where the engine or an
    executor checks (between results, and at least every POLL_SECONDS while waiting). The handler raises nothing
    itself: an exception raised wherever the signal lands can be swallowed (a finaliser, a library's cleanup),
    and the sweep would go on as if never asked to stop. A second Ctrl-C stops at once."""

    def __init__(self):
        self.received: int | None = None

    def remember(self, signum, frame):
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = self.received or signum


_stop = _StopRequest()


def check_stop():
    """Raise SweepInterrupted if a stop signal came since the sweep started (executors call this as they wait)."""
    if _stop.received:
        raise SweepInterrupted(_stop.received)


def report_stopped(outcome: Outcome, stop_after: float | None) -> int:
    """The closing lines every sweep prints: runs left after --stop-after, runs that failed; the exit status."""
    if outcome.left and not outcome.failed and stop_after is not None:
        print(f"stopped after --stop-after {stop_after:g} min: {outcome.left} runs left, so these files are "
              f"partial; run the same command again to go on")
    if outcome.failed:
        print(f"error: {len(outcome.failed)} run(s) failed (the rest are kept; the same command retries them): "
              + "; ".join(outcome.failed), file=sys.stderr)
        return 1
    return 0
