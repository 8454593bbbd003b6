"""The mixer contract every block honours (see README "Adding a mixer").

- ``Mixer(d_model, layer_idx=0, backend="auto", **hyper)``; hyperparameters are plain keyword arguments.
- ``forward(x, cache=None, seq_idx=None) -> y`` with x, y of shape (batch, seq, d_model); causal.
- Packed sequences: ``seq_idx`` (batch, seq) integer, the document index of each position, non-decreasing along
  a row (mamba-ssm's convention; ``ops.packing`` has the helpers). Each document is then mixed as if it were
  run alone: attention masks across documents and restarts rotary positions, recurrences and running sums
  restart, convolution taps stop at the boundary. Packing is for training and evaluation: ``seq_idx`` with a
  cache is an error (``check_packing``). A mixer whose forward takes no ``seq_idx`` still works unpacked; the
  trunk names it in one error when given seq_idx.
- ``allocate_cache(batch_size, device, dtype) -> Cache``; ``forward(x, cache)`` then prefills (any length) or
  decodes (length 1) and updates the cache in place. Decoding token by token equals the parallel forward.
- ``state_size(seq_len) -> int``: the numbers per sequence held to decode the next token after ``seq_len``
  tokens. It equals ``cache.numel_per_sequence()`` after those tokens (the generic tests check this).
"""
import torch
from torch import nn

from ops.packing import check_seq_idx
from zoo.checks import require_positive_int


class Cache(dict):
    """A layer's decoding state: named tensors with the batch dimension first, plus ``seen`` tokens so far.

    Only tensors count towards the state; ``seen`` is bookkeeping (positions for rotary, ring offsets).
    """

    def __init__(self, **tensors: torch.Tensor):
        super().__init__(**tensors)
        self.seen = 0

    def numel_per_sequence(self) -> int:
        return sum(t[0].numel() for t in self.values() if isinstance(t, torch.Tensor))


class Mixer(nn.Module):
    """Base class: holds d_model/layer_idx/backend and validates them; subclasses implement the rest."""

    # the backends a block offers; a block without a CUDA-package path leaves "cuda" out
    backends: tuple[str, ...] = ("auto", "reference", "triton", "cuda")
    # False where "triton" names a path compiled only on CUDA (attention's flex_attention), which Triton's CPU
    # interpreter cannot run: there the generic Triton-vs-reference test has nothing to compare on a CPU
    triton_runs_in_interpreter: bool = True

    def __init__(self, d_model: int, layer_idx: int = 0, backend: str = "auto"):
        super().__init__()
        require_positive_int("d_model", d_model, type(self).__name__)
        if backend not in self.backends:
            raise ValueError(f"{type(self).__name__}: backend {backend!r} is not offered; choose one of "
                             f"{', '.join(self.backends)}")
        self.d_model, self.layer_idx, self.backend = d_model, layer_idx, backend

    def forward(self, x: torch.Tensor, cache: Cache | None = None, seq_idx: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def check_packing(self, x: torch.Tensor, cache: Cache | None, seq_idx: torch.Tensor | None):
        """Validate seq_idx against x; packing is for whole sequences, so a cache (decoding) is refused."""
        if seq_idx is None:
            return
        if cache is not None:
            raise ValueError(f"{type(self).__name__}: seq_idx (packed sequences) is for training and evaluation; "
                             "it cannot be combined with a decoding cache")
        check_seq_idx(seq_idx, x.shape[0], x.shape[1], type(self).__name__)

    def op_backend(self, chosen: str) -> str:
        """The backend to hand an op, given the one this block resolved: where the block's "auto" came out as
        "reference", the op gets "auto", so that it takes its own fastest path there (a compiled CPU kernel)."""
        return "auto" if chosen == "reference" and self.backend == "auto" else chosen

    def allocate_cache(self, batch_size: int, device=None, dtype=None) -> Cache:
        raise NotImplementedError

    def state_size(self, seq_len: int) -> int:
        raise NotImplementedError
