"""The MQAR recall sweep declared as data: presets (task, training budget, lr grid) and knobs per mixer.

Every mixer is paired with a gated short convolution in a 2-layer LM ([short_conv, mixer], no MLP), as in
zoology. A grid point is (mixer, knob setting, d_model, lr); the best lr is kept per (mixer, knobs, d_model).
A knob setting is a dict of the mixer's constructor keywords; the reserved key ``d_models`` overrides the
preset's d_model sweep for that setting (used where a setting would only repeat a state size, or costs too
much on the CPU).
"""
from dataclasses import dataclass, field

PAIRING = {"name": "short_conv", "kernel_size": 3}  # zoology's first layer; the swept mixer is the second
N_LAYERS = 2

# Registered mixers not named in a preset's knobs get the preset's d_model sweep with default hyperparameters.
DEFAULT_KNOBS: list[dict] = [{}]


@dataclass(frozen=True)
class Preset:
    name: str
    description: str                  # what it is and how it fits its time budget
    vocab_size: int
    train_segments: tuple             # (input_seq_len, num_kv_pairs, num_examples)
    test_segments: tuple
    batch_size: int
    max_epochs: int
    lrs: tuple
    d_models: tuple
    knobs: dict = field(default_factory=dict)   # mixer name -> list of knob settings
    precision: str = "32-true"
    accelerator: str = "cpu"
    num_workers: int = 0              # DataLoader workers per run (the data are in-memory tensors)
    workers: int | None = None        # runs trained at once in separate processes (None: one per CPU core)
    seed: int = 0                     # model init; the data draws from 2*seed (train) and 2*seed+1 (test)


CPU = Preset(
    name="cpu",
    description=(
        "2-core CPU, under 15 minutes with every mixer registered: vocabulary 256, train on L=64 with 4/8/16 pairs "
        "(5k examples each, one epoch of batch 32: 469 steps), test on L=64 (4, 8, 16 pairs) and L=128 (16, 32 "
        "pairs: twice the training length and pairs), lr in {3e-3, 1e-2} (3e-2 diverges at this budget), "
        "d_model 32/64/128; runs go to one single-threaded process per core (two small runs use two cores far "
        "better than one run with two threads)."),
    vocab_size=256,
    train_segments=((64, 4, 5000), (64, 8, 5000), (64, 16, 5000)),
    test_segments=((64, 4, 250), (64, 8, 250), (64, 16, 250), (128, 16, 250), (128, 32, 250)),
    batch_size=32,
    max_epochs=1,
    lrs=(3e-3, 1e-2),
    d_models=(32, 64),
    knobs={
        "attention": [{}, {"window": 16, "d_models": [64]}, {"window": 32, "d_models": [64]}],
        "short_conv": [{"d_models": [32, 64, 128]}],
        # the reference selective scan is by far the slowest CPU path (its cost grows with d_state)
        "mamba": [{"d_state": 4}, {"d_state": 8, "d_models": [32]}],
        # one setting each (2 d_models x 2 lrs): Mamba-2's d_state, GLA's heads (key width d_model / (2 * heads))
        "mamba2": [{"d_state": 16, "headdim": 16}],
        "gla": [{"num_heads": 2}],
        "based_linear_attention": [{"feature_dim": 4, "d_models": [64]}, {"feature_dim": 8, "d_models": [64]},
                                   {"feature_dim": 16, "d_models": [32, 64]}],
        "mingru": [{"d_models": [32, 64, 128]}],
        "minlstm": [{"d_models": [32, 64, 128]}],
        # state 3 * topk * d_model (the running top-k of M_Q, M_K, M_V) + latents * (d_model + 1) (the latents'
        # running sums); 8 latents, 2 heads. latent_mode is named so that runs of the static latents (before issue
        # 24, whose run files carry no latent_mode) are never read as the prefix mode's. Its CPU runs are the
        # slowest (~100-220 s each, one thread): two points keep the default list within 15 minutes on 2 cores
        "co4": [{"topk": 4, "latent_mode": "prefix", "d_models": [64]},
                {"topk": 12, "latent_mode": "prefix", "d_models": [32]},
                # the static-latent ablation at the same points (its own line, co4_static)
                {"topk": 4, "latent_mode": "static", "d_models": [64]},
                {"topk": 12, "latent_mode": "static", "d_models": [32]}],
        # state H * head_dim^2 + d_model (token shift): 1088 and 4160 numbers at d_model 64
        "rwkv7": [{"head_dim": 16, "d_models": [64]}, {"head_dim": 64, "d_models": [64]}],
        # state d_model^2 / num_heads + the short convs' 9 * d_model; Gated DeltaNet's heads are d_model / num_heads
        "deltanet": [{"num_heads": 2, "d_models": [32, 64]}],
        "gated_deltanet": [{"num_heads": 2, "head_dim": d // 2, "expand_v": 1, "d_models": [d]} for d in (32, 64)],
    },
)

GPU = Preset(
    name="gpu",
    description=(
        "one H100, aimed at ~20 minutes (an estimate: not yet measured on a GPU): zoology's MQAR (vocabulary 8192, "
        "train up to L=256 with 64 pairs, test up to L=1024 with 256 pairs, 1k test examples per slice), d_model "
        "64-512, lr logspace(-3, -1.5, 4), bf16-mixed. To fit: the training set is 1/5 of zoology's (20k + 4 x 4k "
        "examples), 4 epochs instead of 32 at batch 128 (~1.1k steps per run), and 8 runs share the GPU at once "
        "(2-layer models of this size leave an H100 mostly idle); 192 runs."),
    vocab_size=8192,
    train_segments=((64, 4, 20000), (128, 8, 4000), (256, 16, 4000), (256, 32, 4000), (256, 64, 4000)),
    test_segments=((64, 4, 1000), (64, 8, 1000), (64, 16, 1000), (128, 32, 1000), (256, 64, 1000),
                   (512, 128, 1000), (1024, 256, 1000)),
    batch_size=128,
    max_epochs=4,
    lrs=(1e-3, 3.16e-3, 1e-2, 3.16e-2),
    d_models=(64, 128, 256, 512),
    knobs={
        "attention": [{}, {"window": 32}, {"window": 128}],
        "short_conv": [{}],
        "mamba": [{"d_state": 8}, {"d_state": 16}, {"d_state": 32}],
        "mamba2": [{"d_state": 16, "headdim": 32}, {"d_state": 32, "headdim": 32}, {"d_state": 64, "headdim": 32}],
        # zoology's GLA knobs: heads and key width (expand_k: key_dim = expand_k * d_model, split over the heads)
        "gla": [{"num_heads": 1, "expand_k": 0.5}, {"num_heads": 2, "expand_k": 0.5}, {"num_heads": 2, "expand_k": 1.0}],
        "based_linear_attention": [{"feature_dim": 8}, {"feature_dim": 16}, {"feature_dim": 24}],
        "mingru": [{}],
        "minlstm": [{}],
        "co4": [{"topk": 8, "latent_mode": "prefix"}, {"topk": 12, "latent_mode": "prefix"},
                {"topk": 32, "latent_mode": "prefix"}],
        # fla's 64-wide heads across the d_model sweep, and narrower heads (less state) at two widths
        "rwkv7": [{"head_dim": 64}, {"head_dim": 16, "d_models": [128, 256]}, {"head_dim": 32, "d_models": [128, 256]}],
        # zoology's head sweep at each d_model (head size d_model / num_heads, value heads as wide as key heads)
        "deltanet": [{"num_heads": 1}, {"num_heads": 2}],
        "gated_deltanet": [{"num_heads": h, "head_dim": d // h, "expand_v": 1, "d_models": [d]}
                           for h in (1, 2) for d in (64, 128, 256, 512)],
    },
    precision="bf16-mixed",
    accelerator="gpu",
    workers=8,
)

# Hidden: a few seconds on CPU, for the tests.
TEST = Preset(
    name="test",
    description="tests only: a handful of tiny runs",
    vocab_size=64,
    train_segments=((16, 2, 64),),
    test_segments=((16, 2, 32), (32, 4, 32)),
    batch_size=32,
    max_epochs=1,
    lrs=(1e-3, 3e-3),
    d_models=(16,),
    knobs={"attention": [{}, {"window": 4}]},
)

PRESETS = {p.name: p for p in (CPU, GPU, TEST)}
PUBLIC_PRESETS = ("cpu", "gpu")


def line_name(mixer: str, knobs: dict) -> str:
    """The plot line a point belongs to: sliding-window attention is its own architecture, not attention."""
    if mixer == "attention" and knobs.get("window"):
        return "sliding_window_attention"
    if mixer == "co4" and knobs.get("latent_mode") == "static":  # the ablation, not the block as built
        return "co4_static"
    return mixer
