"""LM throughput and memory per mixer: ``python -m zoo.bench speed [--preset cpu|gpu|generation|co4] [--mixers a,b]
[--out DIR]``.

Each mixer fills every layer of an LM of fixed width and depth (no MLP, so the mixer dominates); attention
(SDPA) is always measured as the reference. Against sequence length and batch size it measures training
tokens/s (forward + backward of the cross-entropy), prefill tokens/s (forward through freshly allocated caches),
decode tokens/s (LM.generate's loop: one token at a time through the caches, after a prefill of that length)
and peak CUDA memory of the training step and the prefill. An out-of-memory point is recorded as such. A preset
with ``variants`` (``co4``: the Co4 block with its Triton running top-k and with its PyTorch path) measures those
layer specs, each under its own label, instead of registered mixers.
"""
import argparse
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from zoo.bench.choices import resolve_mixers, resolve_preset
from zoo.bench.environment import describe
from zoo.report import format_table, pyplot, write_json, write_markdown
from zoo.bench.timing import median_ms, peak_memory_bytes, synchronize

REFERENCE = "attention"


@dataclass(frozen=True)
class SpeedPreset:
    name: str
    d_model: int
    n_layers: int
    vocab_size: int
    seq_lens: tuple
    batch_sizes: tuple
    decode_steps: int                 # tokens decoded per timing
    dtype: str                        # parameters and activations
    knobs: dict = field(default_factory=dict)   # mixer -> constructor keywords (heads sized like the peers)
    cpu_reps: int = 5                 # timing repetitions on CPU (CUDA uses triton's do_bench)
    train: bool = True                # time the training step too (generation presets skip it)
    tokens_per_step: int = 0          # when set: batch = tokens_per_step // seq_len at each length (batch_sizes unused)
    variants: dict = field(default_factory=dict)  # label -> layer spec ({"name": mixer, **keywords}) measured instead
    decode_batch: int = 0             # decode at this batch at every length (0: the point's batch, or with
                                      # tokens_per_step the longest length's, so decode speed is read against context)

    def decode_batch_at(self, batch: int) -> int:
        if self.decode_batch:
            return self.decode_batch
        if self.tokens_per_step:
            return max(1, self.tokens_per_step // max(self.seq_lens))
        return batch

    def points(self) -> list:
        """(batch, seq_len) pairs measured per mixer."""
        if self.tokens_per_step:
            return [(max(1, self.tokens_per_step // length), length) for length in self.seq_lens]
        return [(batch, length) for batch in self.batch_sizes for length in self.seq_lens]


GPU = SpeedPreset(name="gpu", d_model=768, n_layers=4, vocab_size=8192,
                  seq_lens=(512, 1024, 2048, 4096, 8192, 16384), batch_sizes=(1, 8), decode_steps=64,
                  dtype="bf16",
                  knobs={"attention": {"num_heads": 12},
                         "based_linear_attention": {"num_heads": 12, "feature_dim": 16},
                         "deltanet": {"num_heads": 12},
                         "gated_deltanet": {"num_heads": 12, "head_dim": 64, "expand_v": 1}})
# BASED's generation claim: an LM with fixed-size state against attention's KV cache at large batch and context
GENERATION = SpeedPreset(name="generation", d_model=1024, n_layers=8, vocab_size=8192, seq_lens=(2048, 4096, 8192),
                         batch_sizes=(32, 128), decode_steps=32, dtype="bf16", train=False,
                         knobs={"attention": {"num_heads": 16},
                                "based_linear_attention": {"num_heads": 16, "feature_dim": 16}})
# the configs/model defaults (d_model 64, 2 layers, no MLP, their mixer knobs) at the CPU training batch of
# configs/task/mqar.yaml, 64 x 64 = 4096 tokens per step, and at longer lengths with the same tokens per step
CPU = SpeedPreset(name="cpu", d_model=64, n_layers=2, vocab_size=256, seq_lens=(64, 256, 1024), batch_sizes=(),
                  tokens_per_step=4096, decode_steps=16, dtype="fp32",
                  knobs={"attention": {"num_heads": 1}, "based_linear_attention": {"num_heads": 1, "feature_dim": 16},
                         "mamba": {"d_state": 16, "d_conv": 4, "expand": 2}, "mingru": {"expand": 1},
                         "minlstm": {"expand": 1}, "short_conv": {"kernel_size": 3},
                         "rwkv7": {"head_dim": 32, "num_hidden_layers": 2}, "deltanet": {"num_heads": 4},
                         "gated_deltanet": {"num_heads": 4, "head_dim": 16, "expand_v": 1},
                         # as configs/model/mamba2.yaml and gla.yaml (mamba-ssm's default d_state 128 is a GPU size)
                         "mamba2": {"d_state": 64, "d_conv": 4, "expand": 2, "headdim": 32},
                         "gla": {"expand_k": 0.5, "expand_v": 1.0, "num_heads": 4}})
TEST = SpeedPreset(name="test", d_model=16, n_layers=1, vocab_size=32, seq_lens=(8, 16), batch_sizes=(2,),
                   decode_steps=2, dtype="fp32", knobs={"attention": {"num_heads": 2}}, cpu_reps=1)
# Co4 against attention at 2k-16k tokens (issue 14): the running top-k as the Triton kernel, the attention over
# the rows in chunks of 2048 tokens (~48 launches per chunk; its memory per token does not grow with the chunk),
# and the chunked PyTorch path in chunks of 64 (its rank counting builds chunk^2 x 3 d_model int64 per chunk and
# sequence: 75 MB each at 64). 16k tokens per step at every length; 12 heads of 64 like attention.
CO4_KNOBS = {"name": "co4", "num_heads": 12}
CO4 = SpeedPreset(name="co4", d_model=768, n_layers=4, vocab_size=8192, seq_lens=(2048, 4096, 8192, 16384),
                  batch_sizes=(), tokens_per_step=16384, decode_steps=64, dtype="bf16",
                  knobs={"attention": {"num_heads": 12}},
                  variants={"co4_triton": dict(CO4_KNOBS, backend="triton", chunk_size=2048),
                            "co4_pytorch": dict(CO4_KNOBS, backend="reference", chunk_size=64)})
# the same comparison at a tiny size, so that it runs (and is tested) on CPU; "auto" is the PyTorch path there
CO4_TEST = SpeedPreset(name="co4-test", d_model=16, n_layers=1, vocab_size=32, seq_lens=(8, 16), batch_sizes=(2,),
                       decode_steps=2, dtype="fp32", knobs={"attention": {"num_heads": 2}}, cpu_reps=1,
                       variants={"co4_auto": {"name": "co4", "num_heads": 2, "topk": 4, "chunk_size": 8},
                                 "co4_pytorch": {"name": "co4", "num_heads": 2, "topk": 4, "chunk_size": 4,
                                                 "backend": "reference"}})
PRESETS = {p.name: p for p in (CPU, GPU, GENERATION, CO4, TEST, CO4_TEST)}
PUBLIC_PRESETS = ("cpu", "gpu", "generation", "co4")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("--preset", default="cpu",
                        help=f"one of {', '.join(PUBLIC_PRESETS)} (default cpu); 'generation' times prefill and "
                             "decode only, at batch 32-128 and context 2k-8k (BASED's generation setting); 'co4' "
                             "times Co4's Triton and PyTorch paths against attention at 2k-16k tokens (a GPU preset)")
    parser.add_argument("--mixers", default=None,
                        help=f"comma-separated registered mixer names (default: all); {REFERENCE} is always added")
    parser.add_argument("--out", default=None, help="output folder (default bench_results/speed-<preset>)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")


def build_lm(preset: SpeedPreset, mixer: str, device, dtype):
    from zoo.model import LM
    torch.manual_seed(0)
    spec = dict(preset.variants[mixer]) if mixer in preset.variants else {"name": mixer, **preset.knobs.get(mixer, {})}
    model = LM(preset.vocab_size, d_model=preset.d_model, n_layers=preset.n_layers, layers=[spec], mlp=None)
    return model.to(device=device, dtype=dtype)


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def _timer(preset: SpeedPreset, device):
    if device.type == "cuda":
        return lambda fn: median_ms(fn, device)
    return lambda fn: median_ms(fn, device, warmup=2, reps=preset.cpu_reps)


def measure_point(model, preset: SpeedPreset, batch: int, seq_len: int, device) -> dict:
    """Tokens/s for training, prefill and decode, and peak memory, at one (batch, seq_len)."""
    timer = _timer(preset, device)
    tokens = torch.randint(0, preset.vocab_size, (batch, seq_len), device=device)
    targets = torch.randint(0, preset.vocab_size, (batch, seq_len), device=device)
    row = {"batch": batch, "seq_len": seq_len}

    def train_step():
        model.zero_grad(set_to_none=True)
        logits = model(tokens)
        F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten()).backward()

    def prefill_of(prompt):
        @torch.no_grad()
        def prefill():
            caches = model.allocate_cache(len(prompt), device=device)
            return model(prompt, caches=caches, last_only=True)[:, -1], caches
        return prefill

    prefill = prefill_of(tokens)

    steps = (("train", train_step), ("prefill", prefill)) if preset.train else (("prefill", prefill),)
    for name, fn in steps:
        try:
            ms = timer(fn)
            row[f"{name}_tok_s"] = batch * seq_len / (ms * 1e-3)
            row[f"{name}_peak_bytes"] = peak_memory_bytes(fn, device)
        except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
            if not _is_oom(error):
                raise
            row[f"{name}_tok_s"], row[f"{name}_peak_bytes"], row[f"{name}_oom"] = None, None, True
        model.zero_grad(set_to_none=True)
        _free(device)
    try:
        row["decode_batch"] = decode_batch = preset.decode_batch_at(batch)
        prompt = tokens[:decode_batch] if decode_batch <= batch else \
            torch.randint(0, preset.vocab_size, (decode_batch, seq_len), device=device)
        row["decode_tok_s"] = decode_tokens_per_second(model, prefill_of(prompt), decode_batch, preset, device)
    except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
        if not _is_oom(error):
            raise
        row["decode_tok_s"], row["decode_oom"] = None, True
    _free(device)
    row["oom"] = ",".join(n for n in ("train", "prefill", "decode") if row.get(f"{n}_oom")) or None
    return row


@torch.no_grad()
def decode_tokens_per_second(model, prefill, batch: int, preset: SpeedPreset, device) -> float:
    """After a prefill of seq_len tokens, decode ``decode_steps`` tokens greedily (LM.generate's loop)."""
    reps = 3 if device.type == "cuda" else preset.cpu_reps
    seconds = []
    for _ in range(reps + 1):  # the first repetition warms up
        logits, caches = prefill()
        synchronize(device)
        started = time.perf_counter()
        for _ in range(preset.decode_steps):
            next_token = logits.argmax(-1, keepdim=True)
            logits = model(next_token, caches=caches)[:, -1]
        synchronize(device)
        seconds.append(time.perf_counter() - started)
        del caches
    return batch * preset.decode_steps / statistics.median(seconds[1:])


def _free(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()


def add_ratios(rows: list[dict]):
    """Each mixer's tokens/s divided by attention's at the same (batch, seq_len); None where either is missing."""
    reference = {(r["batch"], r["seq_len"]): r for r in rows if r["mixer"] == REFERENCE}
    for row in rows:
        ref = reference.get((row["batch"], row["seq_len"]), {})
        for name in ("train", "prefill", "decode"):
            mine, theirs = row.get(f"{name}_tok_s"), ref.get(f"{name}_tok_s")
            row[f"{name}_vs_attention"] = mine / theirs if mine and theirs else None


def plot(rows: list[dict], path: Path, preset: SpeedPreset, device_name: str):
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    memory = ("train_peak_bytes", "peak memory, training step (GiB)") if preset.train else \
        ("prefill_peak_bytes", "peak memory, prefill (GiB)")
    panels = (("train_tok_s", "training tokens/s (fwd+bwd)"), ("prefill_tok_s", "prefill tokens/s"),
              ("decode_tok_s", "decode tokens/s" + (f", batch {preset.decode_batch_at(0)} at every length"
                                                    if preset.tokens_per_step or preset.decode_batch else "")),
              memory)
    mixers = list(dict.fromkeys(r["mixer"] for r in rows))
    styles = ["-", "--", ":", "-."]
    colors = {m: f"C{i}" for i, m in enumerate(mixers)}
    for ax, (column, title) in zip(axes.flat, panels):
        scale = 2 ** -30 if column.endswith("bytes") else 1
        for mixer in mixers:
            lines = ([(None, f"{mixer}, {preset.tokens_per_step} tokens/step")] if preset.tokens_per_step else
                     [(batch, f"{mixer}, batch {batch}") for batch in preset.batch_sizes])
            for b, (batch, label) in enumerate(lines):
                points = [(r["seq_len"], r[column] * scale) for r in rows
                          if r["mixer"] == mixer and batch in (None, r["batch"]) and r.get(column) is not None]
                if points:
                    ax.plot(*zip(*points), styles[b % len(styles)], marker="o", color=colors[mixer], label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if column.endswith("bytes") and not any(r.get(column) for r in rows):
            ax.text(0.5, 0.5, "not tracked on CPU", ha="center", transform=ax.transAxes)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8)
    fig.suptitle(f"LM d_model {preset.d_model} x {preset.n_layers} layers, {preset.dtype}, {device_name} "
                 f"(OOM points are absent)")
    fig.tight_layout(rect=(0, 0.03 * (1 + len(labels) // 4), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def benchmark(preset: SpeedPreset, mixers: list[str], device: torch.device) -> list[dict]:
    dtype = DTYPES[preset.dtype]
    # each point is measured for every mixer in turn, so a ratio compares timings taken close together
    points = [(m, b, L) for b, L in preset.points() for m in mixers]
    rows, models = [], {}
    for mixer, batch, seq_len in tqdm(points, desc="speed points", unit="point"):
        if mixer not in models:
            models.clear()  # one model on the device at a time
            _free(device)
            models[mixer] = build_lm(preset, mixer, device, dtype)
        row = {"mixer": mixer, **measure_point(models[mixer], preset, batch, seq_len, device)}
        row["state_size"] = models[mixer].state_size(seq_len)
        row["params"] = models[mixer].num_parameters()
        rows.append(row)
    add_ratios(rows)
    return rows


def run(args) -> int:
    try:
        preset = resolve_preset("speed", args.preset, PRESETS, PUBLIC_PRESETS)
        requested = args.mixers.split(",") if args.mixers else None
        if preset.variants and requested:
            raise ValueError(f"--preset {preset.name} measures its own variants ({', '.join(preset.variants)}); "
                             f"got --mixers {args.mixers!r} as well")
        mixers = list(preset.variants) if preset.variants else \
            resolve_mixers(None if requested is None else [REFERENCE] + requested)
    except ValueError as error:
        raise SystemExit(f"error: {error}")
    mixers = [REFERENCE] + [m for m in mixers if m != REFERENCE]
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but CUDA is not available here")
    out = Path(args.out or f"bench_results/speed-{preset.name}")
    started = time.perf_counter()
    rows = benchmark(preset, mixers, device)
    environment = describe(device)
    write_json(out / "speed.json", {"environment": environment, "preset": asdict(preset), "reference": REFERENCE,
                                    "units": {"*_tok_s": "tokens per second", "*_peak_bytes": "bytes (CUDA only)",
                                              "*_vs_attention": "tokens/s ratio to attention at the same point"},
                                    "rows": rows})
    plot(rows, out / "speed.png", preset, environment["device_name"])
    columns = ["mixer", "batch", "seq_len", "train_tok_s", "train_vs_attention", "prefill_tok_s",
               "prefill_vs_attention", "decode_tok_s", "decode_vs_attention", "train_peak_bytes", "prefill_peak_bytes", "state_size", "oom"]
    print(format_table(rows, columns))
    write_markdown(out / "speed.md", rows, columns, environment)
    print(f"{len(rows)} points in {time.perf_counter() - started:.0f} s; wrote {out / 'speed.json'}, "
          f"{out / 'speed.png'}, {out / 'speed.md'}")
    return 0
