"""The recall suite declared as data: which tasks (with their CPU / GPU settings) and which mixers.

Every line is a mixer in zoology's 2-layer [short_conv, mixer] LM, with its knobs chosen so that the recurrent
mixers keep a comparable state (about 1-2k numbers per sequence for the whole LM at CPU size, 4-9k at GPU size;
each cell's exact state size is in the outputs): a table across tasks at matched state, not a frontier. Full
attention (state grows with the length) is the reference, short_conv (state 2 * d_model) the floor.
"""
from dataclasses import dataclass, field

from zoo.bench.recall_grid import N_LAYERS, PAIRING

__all__ = ["SuitePreset", "SUITE_PRESETS", "PUBLIC_SUITE_PRESETS", "N_LAYERS", "PAIRING"]


@dataclass(frozen=True)
class SuitePreset:
    name: str
    description: str
    tasks: dict                       # task name -> its options (vocab_size, slices, task knobs), as for build_task
    lines: dict                       # line name -> mixer spec ({"name": mixer, **knobs})
    d_model: int
    lrs: tuple                        # the lr of each (task, line) is chosen on validation accuracy
    batch_size: int
    max_epochs: int
    precision: str = "32-true"
    accelerator: str = "cpu"
    workers: int | None = None        # runs trained at once in separate processes (None: one per CPU core)
    seed: int = 0
    default_lines: tuple = field(default=())  # lines run when --mixers is not given (others on request)


def _mqar(vocab, train, test):
    return {"vocab_size": vocab, "train_segments": train, "test_segments": test}


def _lines(window: int, feature_dim: int, d_state: int, expand: int, rwkv7_head_dim: int, delta_heads: int,
           d_model: int, ssd_d_state: int, gla_heads: int) -> dict:
    """The suite's lines, their state-setting knobs given per preset (so the recurrent lines match in state)."""
    return {
        "attention": {"name": "attention"},
        "sliding_window_attention": {"name": "attention", "window": window},
        "based_linear_attention": {"name": "based_linear_attention", "feature_dim": feature_dim, "num_heads": 1},
        "mamba": {"name": "mamba", "d_state": d_state},
        "mamba_mimetic": {"name": "mamba", "d_state": d_state, "init": "mimetic"},
        # state nheads * headdim * d_state + conv (expand 2, headdim 32): d_inner * ssd_d_state + the conv window
        "mamba2": {"name": "mamba2", "d_state": ssd_d_state, "headdim": 32},
        # state key_dim * value_dim / heads (fla's expand_k 0.5, expand_v 1): d_model^2 / (2 * gla_heads)
        "gla": {"name": "gla", "num_heads": gla_heads},
        "mingru": {"name": "mingru", "expand": expand},
        "rwkv7": {"name": "rwkv7", "head_dim": rwkv7_head_dim},
        # heads of d_model / delta_heads: state d_model^2 / delta_heads + the three short convs' 9 * d_model
        "deltanet": {"name": "deltanet", "num_heads": delta_heads},
        "gated_deltanet": {"name": "gated_deltanet", "num_heads": delta_heads, "head_dim": d_model // delta_heads,
                           "expand_v": 1},
        "short_conv": {"name": "short_conv", "kernel_size": 3},
    }


CPU_TASKS = {
    "mqar": _mqar(256, [[64, 4, 3000], [64, 8, 3000]], [[64, 8, 300], [128, 16, 300]]),
    "selective_copy": {"vocab_size": 16, "train_slices": [[64, 8, 6000]], "test_slices": [[64, 8, 300], [128, 8, 300]]},
    "induction": {"vocab_size": 16, "train_slices": [[64, 6000]], "test_slices": [[64, 500], [128, 500]]},
    "noisy_recall": {"vocab_size": 128, "noise_vocab_size": 16, "train_slices": [[64, 4, 3000], [64, 8, 3000]],
                     "test_slices": [[64, 8, 300], [128, 16, 300]]},
    "fuzzy_recall": {"vocab_size": 32, "train_slices": [[4, 3000], [8, 3000]], "test_slices": [[8, 300], [12, 300]]},
    "set_disjointness": {"vocab_size": 128, "train_slices": [[4, 12, 3000], [12, 4, 3000]],
                         "test_slices": [[4, 12, 500], [12, 4, 500]]},
    "multi_hop": {"vocab_size": 128, "train_slices": [[4, 1, 3000], [4, 2, 3000]],
                  "test_slices": [[4, 1, 300], [4, 2, 300]]},
    "mqar_forgetting": {"vocab_size": 128, "train_slices": [[8, 4, 6000]], "test_slices": [[8, 4, 300], [12, 6, 300]]},
    "mqar_compositional": {"vocab_size": 96, "train_slices": [[2, 3000], [3, 3000]],
                           "test_slices": [[3, 300], [4, 300]]},
}

GPU_TASKS = {
    "mqar": _mqar(8192, [[64, 4, 20000], [128, 8, 20000], [256, 16, 20000], [256, 32, 20000], [256, 64, 20000]],
                  [[64, 4, 1000], [128, 32, 1000], [256, 64, 1000], [512, 128, 1000]]),
    "selective_copy": {"vocab_size": 16, "train_slices": [[256, 16, 50000]],
                       "test_slices": [[256, 16, 1000], [512, 16, 1000], [1024, 32, 1000]]},
    "induction": {"vocab_size": 16, "train_slices": [[256, 50000]],
                  "test_slices": [[256, 1000], [1024, 1000], [4096, 1000]]},
    "noisy_recall": {"vocab_size": 1024, "noise_vocab_size": 64, "train_slices": [[256, 16, 25000], [256, 32, 25000]],
                     "test_slices": [[256, 32, 1000], [512, 64, 1000], [1024, 128, 1000]]},
    "fuzzy_recall": {"vocab_size": 128, "train_slices": [[16, 25000], [32, 25000]],
                     "test_slices": [[16, 1000], [32, 1000], [64, 1000]]},
    "set_disjointness": {"vocab_size": 1024, "train_slices": [[16, 64, 25000], [64, 16, 25000]],
                         "test_slices": [[16, 64, 1000], [64, 16, 1000], [32, 128, 1000], [128, 32, 1000]]},
    "multi_hop": {"vocab_size": 1024, "train_slices": [[16, 1, 15000], [16, 2, 15000], [16, 3, 15000]],
                  "test_slices": [[16, 1, 1000], [16, 2, 1000], [16, 3, 1000], [16, 4, 1000]]},
    "mqar_forgetting": {"vocab_size": 1024, "train_slices": [[32, 16, 25000], [64, 32, 25000]],
                        "test_slices": [[32, 16, 1000], [64, 32, 1000], [64, 64, 1000]]},
    "mqar_compositional": {"vocab_size": 768, "train_slices": [[4, 25000], [6, 25000]],
                           "test_slices": [[4, 1000], [6, 1000], [8, 1000]]},
}

CPU = SuitePreset(
    name="cpu",
    description=(
        "2-core CPU: every suite task at small size (L <= 128, ~6k training examples, one epoch of batch 32: ~190 "
        "steps), d_model 64, one lr (3e-3: the grid is the GPU preset's; there is no time for one here), state "
        "matched at ~1.0-1.5k numbers for the recurrent lines (mamba d_state 8, BASED feature_dim 4, minGRU expand "
        "8, RWKV-7 head_dim 16, sliding window 8, DeltaNet / Gated DeltaNet 8 heads, Mamba-2 d_state 8, GLA 2 "
        "heads); attention is the unmatched reference, short_conv the floor. A small-budget ranking."),
    tasks=CPU_TASKS,
    lines=_lines(window=8, feature_dim=4, d_state=8, expand=8, rwkv7_head_dim=16, delta_heads=8, d_model=64,
                 ssd_d_state=8, gla_heads=2),
    d_model=64,
    lrs=(3e-3,),
    batch_size=32,
    max_epochs=1,
    default_lines=("attention", "sliding_window_attention", "based_linear_attention", "mamba", "mingru", "rwkv7",
                   "short_conv"),
)

GPU = SuitePreset(
    name="gpu",
    description=(
        "one H100 (an estimate, not yet run on a GPU): the papers' task sizes (selective copy vocabulary 16, L=256, "
        "16 tokens; induction trained at 256, tested to 4096; MQAR zoology-sized), ~50k training examples, 4 epochs "
        "of batch 128, d_model 128, lr in {1e-3, 3e-3, 1e-2} chosen on validation, bf16, 8 runs at once; state "
        "matched at ~4-9k numbers (mamba d_state 16, BASED feature_dim 8, minGRU expand 32, RWKV-7 head_dim 32, "
        "window 32, DeltaNet / Gated DeltaNet 4 heads: ~5.2k, Mamba-2 d_state 16, GLA 2 heads)."),
    tasks=GPU_TASKS,
    lines=_lines(window=32, feature_dim=8, d_state=16, expand=32, rwkv7_head_dim=32, delta_heads=4, d_model=128,
                 ssd_d_state=16, gla_heads=2),
    d_model=128,
    lrs=(1e-3, 3e-3, 1e-2),
    batch_size=128,
    max_epochs=4,
    precision="bf16-mixed",
    accelerator="gpu",
    workers=8,
    default_lines=("attention", "sliding_window_attention", "based_linear_attention", "mamba", "mamba_mimetic",
                   "mamba2", "gla", "mingru", "rwkv7", "short_conv"),
)

# Hidden: seconds on a CPU, for the tests.
TEST = SuitePreset(
    name="test",
    description="tests only",
    tasks={
        "mqar": _mqar(64, [[16, 2, 64]], [[16, 2, 32]]),
        "set_disjointness": {"vocab_size": 32, "train_slices": [[2, 4, 64]], "test_slices": [[2, 4, 32], [4, 2, 32]]},
        "induction": {"vocab_size": 8, "train_slices": [[12, 64]], "test_slices": [[12, 32]]},
    },
    lines={"attention": {"name": "attention"}, "short_conv": {"name": "short_conv"}},
    d_model=16,
    lrs=(1e-3, 3e-3),
    batch_size=32,
    max_epochs=1,
    default_lines=("attention", "short_conv"),
)

SUITE_PRESETS = {p.name: p for p in (CPU, GPU, TEST)}
PUBLIC_SUITE_PRESETS = ("cpu", "gpu")
