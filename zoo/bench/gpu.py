"""The GPU check, one phase per call: ``python -m zoo.bench gpu --phase proof|peers|ops|mixers|test|speed|generation|
recall|co4 --out DIR``. docs/gpu.md has the device-tool call and what to record afterwards.

Made for a device machine that runs one command for at most 10 minutes and returns a few files. ``proof`` comes
first: within 8 minutes it proves every compiled kernel at real sizes, times it against the peers that install
from wheels, and measures a short speed table (zoo/bench/gpu_proof.py). The other phases run only after the proof
has come back, each one call: ``peers`` builds mamba-ssm from source (scripts/peers.sh, 160 s measured) and runs
the parity tests, ``ops`` the kernel benchmark with mamba-ssm built, ``mixers`` the new mixers' peer kernels with
their full autotuning, ``test`` every op and block test compiled, ``speed`` / ``generation`` the full speed
presets, ``recall`` the GPU recall grid (resumable over several calls), ``co4`` Co4 against attention.

Every phase runs its cases as separate processes (zoo/bench/gpu_runner.py): a failing, crashing or timed-out case
is recorded with the tail of its log and the phase goes on; what a case needs and does not find is a "skipped:
not installed" line; a case is not started without the time it needs. Everything goes under DIR, and DIR is
packed into one archive (an uncompressed tar, ``--archive``, default ``DIR-<phase>.tar``) appended to file by
file as results appear, so a kill from outside keeps what was done. ``--resume ARCHIVE`` (an earlier call's
archive, carried back) unpacks it into DIR: the recall sweep skips its finished runs, and cases that passed in
the earlier call are not run again.

On the device machine, whose $OUT returns at most 8 files, keep DIR elsewhere and put only the archive there:
    python3 -m zoo.bench gpu --phase proof --out /tmp/gpu --archive $OUT/gpu-proof.tar
(docs/gpu.md has the whole device-tool call: the carried wheels are installed first, since ``python -m
zoo.bench`` loads every command and ``hpm`` imports Hydra).

Wheels found in ``--wheels`` (default ``.whl/``, filled on a machine with internet by ``bash
scripts/gpu_wheels.sh``) are installed for the phases that need them (fla for the proof, omegaconf and Hydra for
recall). The peers built from source come from ``bash scripts/peers.sh install`` (docs/peers.md).
"""
import argparse
import shlex
import sys
import tarfile
from pathlib import Path

from zoo.bench.gpu_proof import estimated_total, format_dry_run, proof_phase
from zoo.bench.gpu_runner import (PHASE_SECONDS, REPO, Archive, Case, Phase, format_status, pytest_command,
                                  python_command, run_phase, unpack)
from zoo.bench.gpu_table import write_summary

def build_phases(out: Path, mixers: list[str] | None = None) -> dict[str, Phase]:
    """The phases and their cases, writing under ``out``; ``mixers``: what the proof's speed step measures
    (default: every registered mixer)."""
    if mixers is None:
        from zoo.bench.choices import registered_mixers
        mixers = registered_mixers()
    peers_tests = ("tests/ops/test_selective_scan.py::test_cuda_backend_matches_reference",
                   "tests/ops/test_linear_recurrence.py::test_same_semantics_as_fla_chunk_hgrn",
                   "tests/ops/test_based.py::test_triton_matches_fla_parallel_based",
                   "tests/blocks/test_mamba.py")
    build_peers = Case("build-peers", ["bash", "scripts/peers.sh", "install"], 300)
    generation = Case("bench-generation", python_command("-m", "zoo.bench", "speed", "--preset", "generation",
                                                         "--mixers", "based_linear_attention,mamba", "--out",
                                                         str(out / "generation")), 300)
    return {
        "proof": proof_phase(out, mixers),
        "peers": Phase("peers", "~6 min: the peer build took 160 s on an H100 (measured), then the parity tests and "
                                "the SSD check with mamba-ssm built", [
            build_peers,
            Case("pytest-peer-parity", pytest_command(out, "pytest-peer-parity", *peers_tests), 200, needs=("peers",)),
            Case("kernels-ssd", pytest_command(out, "kernels-ssd", "tests/ops/test_peer_kernels_at_real_sizes.py",
                                               "-v", "-k", "ssd"), 120, needs=("peers",)),
        ]),
        "ops": Phase("ops", "~6 min: the peer build (160 s measured) and the kernel benchmark at the anchor shapes "
                            "with mamba-ssm in the same run (estimate)", [
            build_peers,
            Case("bench-ops", python_command("-m", "zoo.bench", "ops", "--preset", "gpu", "--out", str(out / "ops")),
                 360, needs=("peers",)),
        ]),
        "mixers": Phase("mixers", "the new mixers' peer kernels with their full autotuning (minutes per op cold: "
                                  "up to 60 configs per kernel), then timed; estimate, not measured", [
            Case("kernels-peer-mixers", pytest_command(out, "kernels-peer-mixers",
                                                       "tests/ops/test_peer_kernels_at_real_sizes.py", "-v"), 360,
                 needs=("wheels", "peers"), requires=("fla",)),
            Case("mixer-ops", python_command("-m", "zoo.bench.gpu_mixer_ops", "--out", str(out / "mixer-ops")), 170,
                 needs=("wheels", "peers"), requires=("fla",)),
        ]),
        "test": Phase("test", "~5 min, mostly compiling each kernel variant once (estimate, not measured)", [
            Case("pytest-ops", pytest_command(out, "pytest-ops", "tests/ops"), 330),
            Case("pytest-blocks", pytest_command(out, "pytest-blocks", "tests/blocks"), 200),
        ]),
        "speed": Phase("speed", "~8 min: 3 LM groups x 12 (length, batch) points (estimate)", [
            Case(f"bench-speed-{'-'.join(group)}",
                 python_command("-m", "zoo.bench", "speed", "--preset", "gpu", "--mixers", ",".join(group),
                                "--out", str(out / ("speed-" + "-".join(group)))), 170)
            for group in (("mamba",), ("mingru", "minlstm"), ("based_linear_attention", "short_conv"))
        ]),
        "generation": Phase("generation", "~4 min: BASED and Mamba against attention at batch 32-128, context 2k-8k "
                                          "(estimate)", [generation]),
        "recall": Phase("recall", "9 min per call, resumable: the GPU grid (192 runs) takes ~3 calls (estimate)", [
            Case("bench-recall", python_command("-m", "zoo.bench", "recall", "--preset", "gpu", "--out",
                                                str(out / "recall"), "--stop-after", "6"), PHASE_SECONDS,
                 watch="recall/runs", needs=("wheels",)),
        ]),
        # issue 14: is Co4's running top-k kernel right on the GPU, and what does Co4 cost against attention
        "co4": Phase("co4", "~7 min: the kernel's tests, then Co4 (Triton and PyTorch paths) and attention at "
                            "2k-16k tokens (estimate, not measured)", [
            Case("pytest-co4", pytest_command(out, "pytest-co4", "tests/ops/test_co4.py",
                                              "tests/ops/test_kernels_at_real_sizes.py",
                                              "tests/blocks/test_mixer_contract.py", "-k", "co4 or topk"), 150),
            Case("bench-speed-co4", python_command("-m", "zoo.bench", "speed", "--preset", "co4", "--out",
                                                   str(out / "speed-co4")), 400),
        ]),
    }


PHASE_NAMES = ("proof", "peers", "ops", "mixers", "test", "speed", "generation", "recall", "co4")


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("--phase", required=True, help=f"one of {', '.join(PHASE_NAMES)}; proof first")
    parser.add_argument("--out", default="gpu_results", help="folder for every result (default gpu_results)")
    parser.add_argument("--archive", default=None, help="the one archive of the phase (default <out>-<phase>.tar)")
    parser.add_argument("--resume", default=None, metavar="ARCHIVE",
                        help="unpack an earlier call's archive into --out first (its passed cases are not rerun)")
    parser.add_argument("--wheels", default=".whl", help="folder of extra wheels to install for phases that need "
                                                         "them (default .whl; bash scripts/gpu_wheels.sh fills it)")
    parser.add_argument("--dry-run", action="store_true", help="list the phase's cases, limits and estimates; run "
                                                               "nothing (works without a GPU)")


def _cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


def run(args) -> int:
    out = Path(args.out)
    if args.phase not in PHASE_NAMES:
        raise SystemExit(f"error: --phase {args.phase!r} is not one of {', '.join(PHASE_NAMES)}")
    phase = build_phases(out)[args.phase]
    archive = Path(args.archive) if args.archive else out.parent / f"{out.name}-{phase.name}.tar"
    if args.dry_run:
        if phase.name == "proof":
            print(format_dry_run(phase, archive))
            return 0
        print(f"phase {phase.name}: estimate {phase.estimate}; ends by {phase.seconds:.0f} s; archive {archive}")
        for case in phase.cases:
            print(f"  {case.name:<42} limit {case.seconds:>5.0f} s  {shlex.join(case.command)}")
        return 0
    if phase.name == "proof" and not _cuda_available():
        print("error: --phase proof runs on a CUDA GPU and none is visible here; --dry-run lists its cases and "
              "estimates", file=sys.stderr)
        return 2
    if args.resume:
        try:
            print(f"resumed {unpack(Path(args.resume), out)} files from {args.resume} into {out}")
        except (ValueError, tarfile.TarError) as error:
            raise SystemExit(f"error: {error}")
    record = run_phase(phase, out, archive, Path(args.wheels), finish=write_summary if phase.name == "proof" else None)
    print(format_status(record))
    print(f"wrote {out / (phase.name + '.json')} and packed {out} into {archive}")
    return 1 if record["failed"] else 0


__all__ = ["Archive", "Case", "PHASE_NAMES", "PHASE_SECONDS", "Phase", "REPO", "build_phases", "estimated_total",
           "run_phase", "unpack"]
