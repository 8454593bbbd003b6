"""Helpers shared by test modules (so that no test module imports another)."""
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false", "print_test_table=false"]
# 8 batches per epoch, 2 epochs: 16 steps of a 2.5k-parameter model
TINY = ["task.vocab_size=64", "task.train_segments=[[16,2,256]]", "task.test_segments=[[16,2,64],[32,4,64]]",
        "task.batch_size=32", "model.d_model=16", "trainer.max_epochs=2", "trainer.log_every_n_steps=1"]


def tiny_config(*overrides):
    """train.yaml composed with TINY and QUIET, then ``overrides``."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=TINY + QUIET + list(overrides))


def assert_cached_decoding_equals_full_forward(model, seq_len: int, prefill: int, vocab: int = 97):
    """Prefill ``prefill`` tokens, decode the rest one by one: the logits equal the full forward's; returns caches."""
    tokens = torch.randint(0, vocab, (2, seq_len), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(tokens)
        caches = model.allocate_cache(2)
        pieces = [model(tokens[:, :prefill], caches=caches)]
        pieces += [model(tokens[:, t: t + 1], caches=caches) for t in range(prefill, seq_len)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-4, atol=1e-4)
    return caches


def write_documents(folder: Path, count: int) -> list[str]:
    """count documents, each made of lines that carry the document's own marker (doc0007 ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    documents = []
    for i in range(count):
        text = "".join(f"doc{i:04d} line {j}: the quick brown fox {i * j % 97} jumps.\n" for j in range(20 + i % 7))
        (folder / f"{i:04d}.txt").write_text(text, encoding="utf-8")
        documents.append(text)
    return documents


def dplr_inputs(B=2, T=19, H=2, K=6, V=5, decay=1.0, seed=0, initial_state=True, dtype=torch.float64):
    """Inputs of ops.dplr_delta_rule in RWKV-7's shape: a = -kk, b = kk * iclr with kk unit-norm and iclr in (0, 1); gk <= 0."""
    gen = torch.Generator().manual_seed(seed)
    kk = F.normalize(torch.randn(B, T, H, K, generator=gen, dtype=torch.float64), dim=-1)
    iclr = torch.rand(B, T, H, K, generator=gen, dtype=torch.float64)
    inputs = dict(q=torch.randn(B, T, H, K, generator=gen, dtype=torch.float64),
                  k=torch.randn(B, T, H, K, generator=gen, dtype=torch.float64) * 0.5,
                  v=torch.randn(B, T, H, V, generator=gen, dtype=torch.float64),
                  a=-kk, b=kk * iclr,
                  gk=-decay * torch.rand(B, T, H, K, generator=gen, dtype=torch.float64))
    if initial_state:
        inputs["initial_state"] = torch.randn(B, H, K, V, generator=gen, dtype=torch.float64)
    inputs = {name: x.to(dtype) for name, x in inputs.items()}
    return inputs, torch.randn(B, T, H, V, generator=gen, dtype=torch.float64).to(dtype)
