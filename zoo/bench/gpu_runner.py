"""How a GPU-check phase runs: each case a separate process under its own time limit, the phase under one
wall-clock budget, every result packed into one archive as it appears (``python -m zoo.bench gpu`` drives it).

A failing, crashing or timed-out case is recorded (return code, seconds, the tail of its log) and the phase goes
on. Before a case starts, the phase checks that what it needs is installed (else the case is a "skipped: not
installed" line) and that the time left covers the case's minimum (else "skipped: no time left"), so a phase
ends inside its budget with a record of what did not run. With a status file from an earlier call (unpacked by
``--resume``), cases that passed then are not run again.
"""
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
PHASE_SECONDS = 540          # every phase ends by then: the device machine stops a command at 600 s
TAIL_LINES = 30              # lines of a failing case's log kept in the phase's status
PEERS_SITE = Path("/tmp/peers-site")
WHEELS_SITE = Path("/tmp/zoo-wheels-site")
DEADLINE_VARIABLE = "ZOO_CASE_DEADLINE"   # a case's end (time.time() seconds), for commands that pace themselves


@dataclass
class Case:
    """One command of a phase.

    ``seconds``: its own limit (the phase's remaining time caps it too); ``watch``: a folder under DIR whose new
    files go into the archive while the case runs; ``needs``: "peers" puts the built peers on PYTHONPATH,
    "wheels" the extra wheels. ``estimate_s`` and ``basis``: what it should take on one H100 and what that rests
    on (the dry run lists both); ``min_s``: the least time left for which starting it is worth it (default: the
    estimate); ``requires``: importable modules, or "op:<name>[|<name>...]" for an op folder ops/<name>/ in this
    checkout (any one of them), without which it is skipped; ``env``: extra environment variables; ``step``: the heading it is listed under."""
    name: str
    command: list[str]
    seconds: float
    watch: str | None = None
    needs: tuple[str, ...] = ()
    estimate_s: float = 0.0
    basis: str = ""
    min_s: float | None = None
    requires: tuple[str, ...] = ()
    env: dict = field(default_factory=dict)
    step: str = ""

    @property
    def start_threshold(self) -> float:
        return self.estimate_s if self.min_s is None else self.min_s


@dataclass
class Phase:
    name: str
    estimate: str            # what it should take on one H100, and on what that estimate rests
    cases: list[Case] = field(default_factory=list)
    seconds: float = PHASE_SECONDS


# ---- the archive ------------------------------------------------------------------------------------------------
class Archive:
    """An uncompressed tar of DIR, appended to file by file (opened and closed per file, so that the archive on
    disk is complete after every addition). A file that changed since it was added is added again; unpacking
    keeps the last copy."""

    def __init__(self, path: Path, root: Path):
        self.path, self.root = path, root
        self.added: dict[str, tuple[float, int]] = {}

    def add_new(self, under: Path | None = None) -> int:
        under = under or self.root
        files = sorted(p for p in under.rglob("*") if p.is_file()) if under.exists() else []
        count = 0
        for path in files:
            if path.resolve() == self.path.resolve():
                continue  # an archive kept inside DIR does not pack itself
            name = path.relative_to(self.root).as_posix()
            stat = path.stat()
            if self.added.get(name) == (stat.st_mtime, stat.st_size):
                continue
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tarfile.open(self.path, "a" if self.path.exists() else "w") as tar:
                tar.add(path, arcname=name)
            self.added[name] = (stat.st_mtime, stat.st_size)
            count += 1
        return count


def unpack(archive: Path, into: Path) -> int:
    """Unpack an earlier call's archive into DIR (so runs already done are skipped); returns the number of files."""
    if not archive.is_file():
        raise ValueError(f"--resume {archive}: no such archive (pass the .tar an earlier call wrote)")
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        tar.extractall(into, members=members, filter="data")
    return len({m.name for m in members})


# ---- what a case needs ------------------------------------------------------------------------------------------
def python_command(*args: str) -> list[str]:
    return [sys.executable, *args]


def pytest_command(out: Path, name: str, *targets: str) -> list[str]:
    """pytest with its JUnit report at out/<name>.xml (the proof's summary reads each test's outcome from it)."""
    return python_command("-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider",
                          f"--junitxml={out / (name + '.xml')}", *targets)


def _environment(case: Case, wheels_site: Path | None, deadline: float) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **case.env)
    env[DEADLINE_VARIABLE] = f"{deadline:.1f}"
    paths = [str(REPO)]
    if "peers" in case.needs and PEERS_SITE.is_dir():
        paths.insert(0, str(PEERS_SITE))
    if "wheels" in case.needs and wheels_site is not None:
        paths.insert(0, str(wheels_site))
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return env


def install_wheels(wheels: Path, log: Path) -> tuple[Path | None, str]:
    """pip-install every wheel in ``wheels`` into a private folder; (that folder or None, a one-line note)."""
    found = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    if not found:
        return None, f"no wheels in {wheels}/ (only needed where a package such as fla or omegaconf is missing)"
    command = python_command("-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--upgrade",
                      "--target", str(WHEELS_SITE), *map(str, found))
    with open(log, "w") as handle:
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)
    if result.returncode:
        return None, f"installing {len(found)} wheels failed (see {log.name}): going on without them"
    return WHEELS_SITE, f"installed {len(found)} wheels from {wheels}/: {', '.join(p.name.split('-')[0] for p in found)}"


def missing_requirements(case: Case, search: list[Path]) -> list[str]:
    """What of ``case.requires`` this checkout and the paths in ``search`` (besides sys.path) lack."""
    missing = []
    for requirement in case.requires:
        if requirement.startswith("op:"):  # "op:a|b": the folder ops/a/ or ops/b/
            names = requirement[3:].split("|")
            if not any((REPO / "ops" / name / "__init__.py").is_file() for name in names):
                missing.append(" or ".join(f"ops.{name}" for name in names))
            continue
        top = requirement.split(".")[0]
        if any((folder / top).is_dir() or any(folder.glob(f"{top}*.so")) for folder in search if folder.is_dir()):
            continue
        try:
            found = importlib.util.find_spec(requirement) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(requirement)
    return missing


def _tail(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return "\n".join(lines[-TAIL_LINES:])


# ---- running ------------------------------------------------------------------------------------------------------
def run_case(case: Case, out: Path, deadline: float, archive: Archive, wheels_site: Path | None) -> dict:
    """Run one case with its log at out/<name>.log; never raises for the case's own failure."""
    log = out / f"{case.name}.log"
    left = deadline - time.monotonic()
    limit = min(case.seconds, left)
    record = {"case": case.name, "command": shlex.join(case.command), "limit_s": round(max(limit, 0), 1)}
    if limit <= 1 or left < case.start_threshold:
        return {**record, "status": "skipped", "seconds": 0,
                "why": f"no time left in the phase: needs ~{case.start_threshold:.0f} s, {max(left, 0):.0f} s left"}
    started = time.monotonic()
    print(f"[{case.name}] {shlex.join(case.command)} (limit {limit:.0f} s)", flush=True)
    with open(log, "w") as handle:
        try:
            process = subprocess.Popen(case.command, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO,
                                       env=_environment(case, wheels_site, time.time() + limit),
                                       start_new_session=True)
        except OSError as error:
            handle.write(f"could not start: {error}\n")
            return {**record, "status": "failed", "seconds": 0, "returncode": None, "tail": str(error)}
        status = None
        while status is None:
            try:
                process.wait(timeout=2)
                status = "ok" if process.returncode == 0 else "failed"
            except subprocess.TimeoutExpired:
                if time.monotonic() - started > limit:
                    os.killpg(process.pid, 9)   # the case and everything it started
                    process.wait()
                    status = "timeout"
            if case.watch:
                archive.add_new(out / case.watch)
    seconds = time.monotonic() - started
    record.update(status=status, seconds=round(seconds, 1), returncode=process.returncode)
    if status != "ok":
        record["tail"] = _tail(log)
    print(f"[{case.name}] {status} in {seconds:.0f} s" + (f"; last lines of {log}:\n{record['tail']}"
                                                          if status != "ok" else ""), flush=True)
    return record


def _passed_earlier(status_path: Path) -> set[str]:
    """Cases recorded ok in an earlier call's status file (unpacked by --resume)."""
    try:
        earlier = json.loads(status_path.read_text())
    except (OSError, ValueError):
        return set()
    return {c["case"] for c in earlier.get("cases", []) if c.get("status") == "ok" and not c.get("why")}


def run_phase(phase: Phase, out: Path, archive_path: Path, wheels: Path | None = None,
              phase_seconds: float | None = None, finish: Callable[[Path], object] | None = None) -> dict:
    """Run every case of ``phase`` (going on past failures) within ``phase_seconds`` (default the phase's own);
    write out/<phase>.json after every case and pack out into ``archive_path`` as it goes; ``finish(out)`` (e.g.
    a summary writer) runs last, before the final packing. Returns the status record."""
    deadline = time.monotonic() + (phase.seconds if phase_seconds is None else phase_seconds)
    out.mkdir(parents=True, exist_ok=True)
    archive = Archive(archive_path, out)
    status_path = out / f"{phase.name}.json"
    done_earlier = _passed_earlier(status_path)
    archive.add_new()                  # what an earlier call left (e.g. unpacked with --resume) is kept
    notes, wheels_site = [], None
    if wheels is not None and any("wheels" in case.needs for case in phase.cases):
        wheels_site, note = install_wheels(wheels, out / "install-wheels.log")
        notes.append(note)
    search = [p for p in (wheels_site, PEERS_SITE) if p is not None]
    record = {"phase": phase.name, "estimate": phase.estimate, "notes": notes, "cases": []}
    for case in phase.cases:
        missing = missing_requirements(case, search)
        if case.name in done_earlier:
            result = {"case": case.name, "status": "ok", "seconds": 0, "why": "passed in an earlier call (resumed)"}
        elif case.name == "build-peers" and (PEERS_SITE / "mamba_ssm").is_dir() and (PEERS_SITE / "fla").is_dir():
            result = {"case": case.name, "status": "ok", "seconds": 0, "why": f"already in {PEERS_SITE}"}
        elif missing:
            result = {"case": case.name, "status": "skipped", "seconds": 0,
                      "why": f"not installed: {', '.join(missing)}"}
        else:
            result = run_case(case, out, deadline, archive, wheels_site)
        if case.step:
            result["step"] = case.step
        record["cases"].append(result)
        print(f"[{case.name}] {result['status']}" + (f": {result['why']}" if result.get("why") else ""), flush=True)
        status_path.write_text(json.dumps(record, indent=2))
        archive.add_new()
    record["failed"] = [c["case"] for c in record["cases"] if c["status"] in ("failed", "timeout")]
    record["skipped"] = [c["case"] for c in record["cases"] if c["status"] == "skipped"]
    status_path.write_text(json.dumps(record, indent=2))
    if finish is not None:
        print(f"wrote {finish(out)}", flush=True)
    archive.add_new()
    return record


def format_status(record: dict) -> str:
    lines = [f"phase {record['phase']} (estimate: {record['estimate']})"] + [f"note: {n}" for n in record["notes"]]
    for case in record["cases"]:
        extra = case.get("why") or (f"return code {case.get('returncode')}" if case["status"] != "ok" else "")
        lines.append(f"  {case['case']:<42} {case['status']:<8} {case['seconds']:>7.1f} s  {extra}")
    if record.get("skipped"):
        lines.append(f"skipped: {', '.join(record['skipped'])}")
    lines.append("all cases ok" if not record["failed"] else f"failed: {', '.join(record['failed'])}")
    return "\n".join(lines)
