"""The GPU check, one phase per call: ``python -m zoo.bench gpu --phase test|peers|ops|speed|recall|co4 --out DIR``.

Made for a device machine that runs one command for at most 10 minutes and returns a few files: every phase
runs its cases as separate processes, each under a time limit that ends the phase by PHASE_SECONDS (9 minutes)
whatever happens; a failing, crashing or timed-out case is recorded (return code, seconds, the tail of its log)
and the phase goes on. Everything goes under DIR, and DIR is packed into one archive (an uncompressed tar,
``--archive``, default ``DIR-<phase>.tar``) that is appended to as files appear: the recall phase adds each run
file as its run finishes, so a phase killed from outside loses at most the run in flight, and ``--resume
ARCHIVE`` (the archive of an earlier call, brought back and carried in the working tree) unpacks it into DIR so
that ``zoo.bench recall`` skips the runs already done.

On the device machine, whose output folder $OUT returns at most 8 files, keep DIR elsewhere and put only the
archive there:  python -m zoo.bench gpu --phase test --out /tmp/gpu --archive $OUT/gpu-test.tar

Phase durations on one H100 are estimates from the sizes until a GPU session measures them (see PHASES). No
phase imports Hydra: only ``recall`` needs omegaconf (through zoo.train); wheels found in ``--wheels`` (default
``.whl/``, filled on a machine with internet by ``bash scripts/peers.sh wheels``) are installed for the phase.
The peers (fla, mamba-ssm) are built from ``.peers/`` by ``bash scripts/peers.sh install`` (docs/peers.md).
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PHASE_SECONDS = 540          # every phase ends by then: the device machine stops a command at 600 s
TAIL_LINES = 30              # lines of a failing case's log kept in the phase's status
PEERS_SITE = Path("/tmp/peers-site")
WHEELS_SITE = Path("/tmp/zoo-wheels-site")


@dataclass
class Case:
    """One command of a phase. ``seconds``: its own limit (the phase's remaining time caps it too); ``watch``: a
    folder under DIR whose new files go into the archive while the case runs; ``needs``: "peers" puts the built
    peers on PYTHONPATH, "wheels" the extra wheels."""
    name: str
    command: list[str]
    seconds: float
    watch: str | None = None
    needs: tuple[str, ...] = ()


@dataclass
class Phase:
    name: str
    estimate: str            # what it should take on one H100, and on what that estimate rests
    cases: list[Case] = field(default_factory=list)


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _pytest(out: Path, name: str, *targets: str) -> list[str]:
    return _python("-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", f"--junitxml={out / (name + '.xml')}",
                   *targets)


def build_phases(out: Path) -> dict[str, Phase]:
    """The phases and their cases, writing under ``out``."""
    peers_tests = ("tests/ops/test_selective_scan.py::test_cuda_backend_matches_reference",
                   "tests/ops/test_linear_recurrence.py::test_same_semantics_as_fla_chunk_hgrn",
                   "tests/ops/test_based.py::test_triton_matches_fla_parallel_based",
                   "tests/blocks/test_mamba.py")
    build_peers = Case("build-peers", ["bash", "scripts/peers.sh", "install"], 300)
    return {
        "test": Phase("test", "~5 min, mostly compiling each kernel variant once (estimate, not measured)", [
            Case("pytest-ops", _pytest(out, "pytest-ops", "tests/ops"), 330),
            Case("pytest-blocks", _pytest(out, "pytest-blocks", "tests/blocks"), 200),
        ]),
        "peers": Phase("peers", "~4 min: the peer build took 160 s on an H100 (measured), then the parity tests", [
            build_peers,
            Case("pytest-peer-parity", _pytest(out, "pytest-peer-parity", *peers_tests), 200, needs=("peers",)),
        ]),
        "ops": Phase("ops", "~6 min: the peer build (160 s measured) and the kernel benchmark at the anchor shapes "
                            "(estimate)", [
            build_peers,
            Case("bench-ops", _python("-m", "zoo.bench", "ops", "--preset", "gpu", "--out", str(out / "ops")), 360,
                 needs=("peers",)),
        ]),
        "speed": Phase("speed", "~8 min: 3 LM groups x 12 (length, batch) points, then generation (estimate)", [
            Case(f"bench-speed-{'-'.join(group)}",
                 _python("-m", "zoo.bench", "speed", "--preset", "gpu", "--mixers", ",".join(group),
                         "--out", str(out / ("speed-" + "-".join(group)))), 150)
            for group in (("mamba",), ("mingru", "minlstm"), ("based_linear_attention", "short_conv"))
        ] + [Case("bench-generation", _python("-m", "zoo.bench", "speed", "--preset", "generation", "--mixers",
                                              "based_linear_attention,mamba", "--out", str(out / "generation")), 90)]),
        "recall": Phase("recall", "9 min per call, resumable: the GPU grid (192 runs) takes ~3 calls (estimate)", [
            Case("bench-recall", _python("-m", "zoo.bench", "recall", "--preset", "gpu", "--out", str(out / "recall"),
                                         "--stop-after", "6"), PHASE_SECONDS, watch="recall/runs", needs=("wheels",)),
        ]),
        # issue 14: is Co4's running top-k kernel right on the GPU, and what does Co4 cost against attention
        "co4": Phase("co4", "~7 min: the kernel's tests, then Co4 (Triton and PyTorch paths) and attention at "
                            "2k-16k tokens (estimate, not measured)", [
            Case("pytest-co4", _pytest(out, "pytest-co4", "tests/ops/test_co4.py",
                                       "tests/ops/test_kernels_at_real_sizes.py", "tests/blocks/test_mixer_contract.py",
                                       "-k", "co4 or topk"), 150),
            Case("bench-speed-co4", _python("-m", "zoo.bench", "speed", "--preset", "co4", "--out",
                                            str(out / "speed-co4")), 400),
        ]),
    }


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


# ---- running a phase --------------------------------------------------------------------------------------------
def _environment(needs: tuple[str, ...], wheels_site: Path | None) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    paths = [str(REPO)]
    if "peers" in needs and PEERS_SITE.is_dir():
        paths.insert(0, str(PEERS_SITE))
    if "wheels" in needs and wheels_site is not None:
        paths.insert(0, str(wheels_site))
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return env


def install_wheels(wheels: Path, log: Path) -> tuple[Path | None, str]:
    """pip-install every wheel in ``wheels`` into a private folder; (that folder or None, a one-line note)."""
    found = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    if not found:
        return None, f"no wheels in {wheels}/ (only needed where a package such as omegaconf is missing)"
    command = _python("-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--target",
                      str(WHEELS_SITE), *map(str, found))
    with open(log, "w") as handle:
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)
    if result.returncode:
        return None, f"installing {len(found)} wheels failed (see {log.name}): going on without them"
    return WHEELS_SITE, f"installed {len(found)} wheels from {wheels}/"


def _tail(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return "\n".join(lines[-TAIL_LINES:])


def run_case(case: Case, out: Path, deadline: float, archive: Archive, wheels_site: Path | None) -> dict:
    """Run one case with its log at out/<name>.log; never raises for the case's own failure."""
    log = out / f"{case.name}.log"
    limit = min(case.seconds, deadline - time.monotonic())
    record = {"case": case.name, "command": shlex.join(case.command), "limit_s": round(max(limit, 0), 1)}
    if limit <= 1:
        return {**record, "status": "skipped", "seconds": 0, "why": "no time left in the phase"}
    started = time.monotonic()
    print(f"[{case.name}] {shlex.join(case.command)} (limit {limit:.0f} s)", flush=True)
    with open(log, "w") as handle:
        try:
            process = subprocess.Popen(case.command, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO,
                                       env=_environment(case.needs, wheels_site), start_new_session=True)
        except OSError as error:
            handle.write(f"could not start: {error}\n")
            return {**record, "status": "failed", "seconds": 0, "returncode": None, "tail": str(error)}
        status = None
        while status is None:
            try:
                process.wait(timeout=5)
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


def run_phase(phase: Phase, out: Path, archive_path: Path, wheels: Path | None = None,
              phase_seconds: float = PHASE_SECONDS) -> dict:
    """Run every case of ``phase`` (going on past failures) within ``phase_seconds``; write out/<phase>.json and
    pack out into ``archive_path``. Returns the status record."""
    deadline = time.monotonic() + phase_seconds
    out.mkdir(parents=True, exist_ok=True)
    archive = Archive(archive_path, out)
    archive.add_new()                  # what an earlier call left (e.g. unpacked with --resume) is kept
    notes, wheels_site = [], None
    if wheels is not None and any("wheels" in case.needs for case in phase.cases):
        wheels_site, note = install_wheels(wheels, out / "install-wheels.log")
        notes.append(note)
    record = {"phase": phase.name, "estimate": phase.estimate, "notes": notes, "cases": []}
    status_path = out / f"{phase.name}.json"
    for case in phase.cases:
        if case.name == "build-peers" and (PEERS_SITE / "mamba_ssm").is_dir() and (PEERS_SITE / "fla").is_dir():
            record["cases"].append({"case": case.name, "status": "ok", "seconds": 0, "why": f"already in {PEERS_SITE}"})
            continue
        record["cases"].append(run_case(case, out, deadline, archive, wheels_site))
        status_path.write_text(json.dumps(record, indent=2))
        archive.add_new()
    record["failed"] = [c["case"] for c in record["cases"] if c["status"] != "ok"]
    status_path.write_text(json.dumps(record, indent=2))
    archive.add_new()
    return record


def format_status(record: dict) -> str:
    lines = [f"phase {record['phase']} (estimate: {record['estimate']})"] + [f"note: {n}" for n in record["notes"]]
    for case in record["cases"]:
        extra = case.get("why") or (f"return code {case.get('returncode')}" if case["status"] != "ok" else "")
        lines.append(f"  {case['case']:<42} {case['status']:<8} {case['seconds']:>7.1f} s  {extra}")
    lines.append("all cases ok" if not record["failed"] else f"failed: {', '.join(record['failed'])}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("--phase", required=True, help="one of test, peers, ops, speed, recall, co4")
    parser.add_argument("--out", default="gpu_results", help="folder for every result (default gpu_results)")
    parser.add_argument("--archive", default=None, help="the one archive of the phase (default <out>-<phase>.tar)")
    parser.add_argument("--resume", default=None, metavar="ARCHIVE",
                        help="unpack an earlier call's archive into --out first (the recall phase then goes on)")
    parser.add_argument("--wheels", default=".whl", help="folder of extra wheels to install for phases that need "
                                                         "them (default .whl)")
    parser.add_argument("--dry-run", action="store_true", help="list the phase's cases and limits; run nothing")


def run(args) -> int:
    out = Path(args.out)
    phases = build_phases(out)
    if args.phase not in phases:
        raise SystemExit(f"error: --phase {args.phase!r} is not one of {', '.join(phases)}")
    phase = phases[args.phase]
    archive = Path(args.archive) if args.archive else out.parent / f"{out.name}-{phase.name}.tar"
    if args.dry_run:
        print(f"phase {phase.name}: estimate {phase.estimate}; ends by {PHASE_SECONDS} s; archive {archive}")
        for case in phase.cases:
            print(f"  {case.name:<42} limit {case.seconds:>5.0f} s  {shlex.join(case.command)}")
        return 0
    if args.resume:
        try:
            print(f"resumed {unpack(Path(args.resume), out)} files from {args.resume} into {out}")
        except (ValueError, tarfile.TarError) as error:
            raise SystemExit(f"error: {error}")
    record = run_phase(phase, out, archive, Path(args.wheels))
    print(format_status(record))
    print(f"wrote {out / (phase.name + '.json')} and packed {out} into {archive}")
    return 1 if record["failed"] else 0


__all__ = ["Archive", "Case", "Phase", "build_phases", "run_phase", "unpack"]
