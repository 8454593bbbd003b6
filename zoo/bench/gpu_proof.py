"""The GPU proof: ``python -m zoo.bench gpu --phase proof``, everything a first GPU session needs, within 8 minutes
on one H100 or H200, in three steps:

1. kernels: the real-size kernel tests compiled on the GPU (selective scan incl. packed documents, linear
   recurrence in both forms, BASED, running top-k: NaN-filled fresh buffers, bf16, up to T=16k), then the new
   mixers' peer backends (fla's chunk kernels, mamba-ssm's SSD) against their references where this checkout has
   the op and the package is carried;
2. peers: ``zoo.bench ops`` per op against the peers that install from wheels with no build (fla's hgrn and
   based kernels, cuDNN ``nn.GRU``, SDPA/flash attention) with the copy bandwidth measured in the same process;
   mamba-ssm's selective scan, which needs a build, against its recorded H100 timings (gpu_table says so in the
   row); the new mixers' peer kernels timed against their references;
3. speed: training, prefill and decode tokens/s of every registered mixer against attention at L 2k and 8k.

Every case has an estimate (``ESTIMATES`` says what each rests on), a limit, and a minimum time left to start;
the phase ends by ``PROOF_SECONDS`` and records what it skipped. ``proof.md`` (zoo.bench.gpu_table) sums it up.
"""
from dataclasses import dataclass
from pathlib import Path

from zoo.bench.gpu_runner import Case, Phase, pytest_command, python_command

PROOF_SECONDS = 480          # 8 minutes from the phase's start: the device call's timeout_s is 540
SETUP_S = 8.0                # installing the carried wheels (pip --no-index --no-deps of ~6 pure-Python wheels)

# What the estimates rest on (no kernel of the zoo has run on a GPU yet, so none is a GPU measurement of ours):
START_S = 6.0                # one process: importing torch and the zoo took 1.2 s here; a CUDA context ~2-4 s more
SCAN_COMPILE_S = 0.8         # CPU seconds per sm_90 compile of a selective-scan kernel: `ops.compile_check
                             # selective_scan` compiled its 6 kernels in 4.6 s of CPU time on the 2-core machine
SMALL_COMPILE_S = 0.4        # the same for the smaller kernels: 36 linear-recurrence autotune candidates in 13.6 s
PEER_COMPILE_S = 0.6         # fla's / mamba-ssm's tensor-core chunk kernels: taken between the two above
AUTOTUNE_BENCH_S = 0.13      # triton's autotuner times each config with do_bench: 25 ms warm-up + 100 ms of runs
MEASURE_S = 0.3              # one do_bench median of a millisecond kernel (its own estimate runs + 125 ms)
PER_MIXER_S = 10.0           # zoo.bench.gpu_speed: one mixer at two points (train + prefill + 4 x 32 decode steps)
KERNEL_TESTS = "tests/ops/test_kernels_at_real_sizes.py"
PEER_KERNEL_TESTS = "tests/ops/test_peer_kernels_at_real_sizes.py"
PEER_AUTOTUNE = {"ZOO_PEER_AUTOTUNE_CONFIGS": "1"}
FLA_OPS = "op:gla|delta_rule|gated_delta_rule|dplr_delta_rule"   # the new mixers' ops with an fla backend


@dataclass(frozen=True)
class Estimate:
    """Seconds = START_S per process + compiles x seconds each + autotune timings + do_bench medians + runs."""
    compiles: int = 0
    compile_s: float = SMALL_COMPILE_S
    autotune_configs: int = 0
    measures: int = 0
    run_s: float = 0.0
    note: str = ""

    @property
    def seconds(self) -> float:
        return round(START_S + self.compiles * self.compile_s + self.autotune_configs * AUTOTUNE_BENCH_S
                     + self.measures * MEASURE_S + self.run_s, 1)

    @property
    def basis(self) -> str:
        parts = [f"start {START_S:g} s"]
        if self.compiles:
            parts.append(f"{self.compiles} compiles x {self.compile_s:g} s")
        if self.autotune_configs:
            parts.append(f"{self.autotune_configs} autotune timings x {AUTOTUNE_BENCH_S:g} s")
        if self.measures:
            parts.append(f"{self.measures} do_bench medians x {MEASURE_S:g} s")
        if self.run_s:
            parts.append(f"{self.run_s:g} s of runs")
        return " + ".join(parts) + (f" ({self.note})" if self.note else "")


ESTIMATES = {
    "kernels-selective-scan": Estimate(12, SCAN_COMPILE_S, run_s=8, note="6 tests x fwd + bwd kernel; the "
                                       "references at up to L16k"),
    "kernels-linear-recurrence": Estimate(72, autotune_configs=108, run_s=6, note="9 candidates x fwd/bwd x "
                                          "linear/log x 2 specialisations (D%16); 6 autotune keys x 2 kernels x 9"),
    "kernels-based": Estimate(9, PEER_COMPILE_S, run_s=5, note="3 specialisations x 3 kernels"),
    "kernels-running-topk": Estimate(12, PEER_COMPILE_S, run_s=10, note="3 shapes x 4 kernels; the reference at 2k"),
    "kernels-fla-mixers": Estimate(80, PEER_COMPILE_S, run_s=12, note="4 ops x ~20 fla kernels (fwd + bwd) at one "
                                   "autotune config each; every op counted, present or not"),
    "kernels-ssd": Estimate(20, PEER_COMPILE_S, run_s=3, note="~20 mamba-ssm SSD kernels at one config"),
    "ops-selective-scan": Estimate(4, SCAN_COMPILE_S, measures=16, run_s=5, note="4 cases x 2 impls x fwd, fwd+bwd; "
                                   "the reference at the anchor shapes"),
    "ops-linear-recurrence": Estimate(48, autotune_configs=84, measures=24, note="fla's hgrn autotunes 4 kernels "
                                      "x 12 configs (docs/peers.md timings: all under 10 ms); ours re-timed at 2 keys"),
    "ops-based": Estimate(6, PEER_COMPILE_S, measures=10, run_s=2, note="fla parallel/fused_chunk_based, SDPA"),
    "mixer-ops": Estimate(measures=20, note="5 ops x 2 impls x fwd, fwd+bwd; kernels compiled in step 1"),
}


def speed_estimate(mixers: int) -> Estimate:
    return Estimate(run_s=PER_MIXER_S * mixers, note=f"{mixers} mixers x {PER_MIXER_S:g} s")


def proof_phase(out: Path, mixers: list[str]) -> Phase:
    """The proof's cases, writing under ``out``; ``mixers``: the registered mixers the speed step measures."""
    def case(name, command, seconds, step, **extra):
        estimate = extra.pop("estimate", None) or ESTIMATES[name]
        return Case(name, command, seconds, needs=("wheels",), estimate_s=estimate.seconds, basis=estimate.basis,
                    step=step, **extra)

    def kernel_tests(name, file, selection, seconds, **extra):
        return case(name, pytest_command(out, name, file, "-v", "-k", selection), seconds, "1 kernels", **extra)

    def bench_ops(op, seconds):
        name = f"ops-{op.replace('_', '-')}"
        command = python_command("-m", "zoo.bench", "ops", op, "--preset", "gpu", "--out", str(out / f"ops-{op}"))
        return case(name, command, seconds, "2 peers", watch=f"ops-{op}")

    speed = speed_estimate(len(mixers))
    cases = [
        kernel_tests("kernels-selective-scan", KERNEL_TESTS, "selective_scan", 90),
        kernel_tests("kernels-linear-recurrence", KERNEL_TESTS, "linear_recurrence", 120),
        kernel_tests("kernels-based", KERNEL_TESTS, "based_attention", 60),
        kernel_tests("kernels-running-topk", KERNEL_TESTS, "running_topk", 60),
        kernel_tests("kernels-fla-mixers", PEER_KERNEL_TESTS, "not ssd", 110, requires=(FLA_OPS, "fla"),
                     env=PEER_AUTOTUNE),
        kernel_tests("kernels-ssd", PEER_KERNEL_TESTS, "ssd", 60, requires=("op:ssd", "mamba_ssm", "selective_scan_cuda"),
                     env=PEER_AUTOTUNE),
        bench_ops("selective_scan", 90),
        bench_ops("linear_recurrence", 120),
        bench_ops("based", 60),
        case("mixer-ops", python_command("-m", "zoo.bench.gpu_mixer_ops", "--out", str(out / "mixer-ops")), 60,
             "2 peers", requires=(FLA_OPS, "fla"), env=PEER_AUTOTUNE, watch="mixer-ops"),
        case("speed", python_command("-m", "zoo.bench.gpu_speed", "--out", str(out / "speed")), PROOF_SECONDS,
             "3 speed", estimate=speed, min_s=START_S + 2 * PER_MIXER_S, watch="speed"),
    ]
    total = SETUP_S + sum(c.estimate_s for c in cases)
    return Phase("proof", f"~{total / 60:.1f} min by estimate (setup {SETUP_S:g} s + every case; see --dry-run), "
                          f"ends by {PROOF_SECONDS} s", cases, seconds=PROOF_SECONDS)


def estimated_total(phase: Phase) -> float:
    return SETUP_S + sum(case.estimate_s for case in phase.cases)


def format_dry_run(phase: Phase, archive: Path) -> str:
    lines = [f"phase {phase.name}: ends by {phase.seconds:.0f} s; archive {archive}",
             f"  {'setup: install the carried wheels':<60} est {SETUP_S:>5.0f} s"]
    step = None
    for case in phase.cases:
        if case.step != step:
            step = case.step
            lines.append(f"step {step}")
        needs = f"; skipped unless installed: {', '.join(case.requires)}" if case.requires else ""
        lines.append(f"  {case.name:<28} est {case.estimate_s:>5.0f} s  limit {case.seconds:>4.0f} s  "
                     f"starts with >= {case.start_threshold:.0f} s left{needs}")
        lines.append(f"      basis: {case.basis}")
    total = estimated_total(phase)
    verdict = "fits" if total <= PROOF_SECONDS else "DOES NOT FIT"
    lines.append(f"total estimate {total:.0f} s ({total / 60:.1f} min): {verdict} the {PROOF_SECONDS} s budget")
    return "\n".join(lines)
