"""Hierarchical parametric memory (Pouransari et al., 2025): an anchor SwiGLU FFN plus a bank of small SwiGLU
blocks, of which each sequence fetches one per tree level, chosen by its ``memory_path``.

Level l (1..levels) holds ``branching**l`` blocks of ``block_sizes[l-1]`` hidden units (W1, W2: d -> r_l,
W3: r_l -> d) and one more: the context-independent generic block. The fetched memory is the concatenation of
the blocks on the path, i.e. extra hidden units of the same FFN, so

    y = anchor(x) + W3[path] (silu(W1[path] x) * W2[path] x).

W3 starts at zero, so a fresh memory leaves the anchor's output unchanged. The bank is stored as one row per
block and fetched with ``F.embedding(..., sparse=True)``: its gradient is sparse (only fetched rows), and the
bank parameters are marked ``_sparse_grad`` so that training steps them with ``zoo.sparse_adam.SparseBlockAdam``
(state created lazily, per fetched block) instead of the dense optimizer.

``memory_path`` is a (batch, levels) integer tensor: the child index (0..branching-1) chosen at each level, or a
row of -1 for the generic memory. Without a path the module is the anchor alone.
"""
import torch
import torch.nn.functional as F
from torch import nn

from zoo.blocks.mlp import SwiGLU
from zoo.blocks.registry import register_mlp
from zoo.checks import require_positive_int

GENERIC = -1  # a path row of -1s fetches the generic memory


def block_sizes_per_level(block_sizes, levels: int) -> tuple[int, ...]:
    """One int for every level, or a list of ``levels`` ints."""
    sizes = (block_sizes,) * levels if isinstance(block_sizes, int) else tuple(block_sizes)
    if len(sizes) != levels:
        raise ValueError(f"HierarchicalMemoryFFN: block_sizes needs one size per level ({levels}), got {block_sizes!r}")
    for size in sizes:
        require_positive_int("each block size", size, "HierarchicalMemoryFFN")
    return sizes


@register_mlp("hpm")
class HierarchicalMemoryFFN(nn.Module):
    """Anchor SwiGLU (``expand``) + a memory bank of ``levels`` levels, ``branching`` children per node."""

    def __init__(self, d_model: int, levels: int = 2, branching: int = 4, block_sizes=(8, 16),
                 expand: float = 8 / 3, multiple_of: int = 16, init_std: float = 0.02):
        super().__init__()
        for name, value in (("d_model", d_model), ("levels", levels), ("branching", branching)):
            require_positive_int(name, value, "HierarchicalMemoryFFN")
        self.d_model, self.levels, self.branching = d_model, levels, branching
        self.block_sizes = block_sizes_per_level(block_sizes, levels)
        self.anchor = SwiGLU(d_model, expand=expand, multiple_of=multiple_of)
        # row b of level l: block b (b < branching**l) or the generic block (the last row)
        self.bank_in = nn.ParameterList()   # (blocks + 1, 2 * r * d): W1 and W2 of each block
        self.bank_out = nn.ParameterList()  # (blocks + 1, d * r): W3 of each block, zero at start
        for level, r in enumerate(self.block_sizes, start=1):
            rows = branching ** level + 1
            self.bank_in.append(nn.Parameter(torch.randn(rows, 2 * r * d_model) * init_std))
            self.bank_out.append(nn.Parameter(torch.zeros(rows, d_model * r)))
        for param in self.bank_parameters():
            param._sparse_grad = True  # stepped by SparseBlockAdam, only on the fetched rows

    @staticmethod
    def without_memory(spec: dict) -> dict:
        """The MLP of a layer left without a memory (LM's memory_layers): this anchor SwiGLU alone."""
        anchor = {"name": "swiglu"}
        anchor.update({k: spec[k] for k in ("expand", "multiple_of") if k in spec})
        return anchor

    def bank_parameters(self) -> list[nn.Parameter]:
        return [*self.bank_in, *self.bank_out]

    def blocks_per_level(self) -> list[int]:
        return [self.branching ** level for level in range(1, self.levels + 1)]

    def size_report(self) -> dict:
        """bank: every memory parameter (generic blocks included); fetched: what one context uses."""
        return {"bank": sum(p.numel() for p in self.bank_parameters()),
                "fetched": 3 * self.d_model * sum(self.block_sizes)}

    def block_indices(self, memory_path: torch.Tensor) -> torch.Tensor:
        """(batch, levels) child indices -> (batch, levels) row of each level's bank (generic: the last row)."""
        if memory_path.ndim != 2 or memory_path.shape[1] != self.levels:
            raise ValueError(f"HierarchicalMemoryFFN: memory_path must have shape (batch, {self.levels}), "
                             f"got {tuple(memory_path.shape)}")
        generic = memory_path == GENERIC
        mixed = generic.any(1) & ~generic.all(1)
        bad = ((memory_path < 0) & ~generic) | (memory_path >= self.branching) | mixed[:, None]
        if bad.any():
            raise ValueError(f"HierarchicalMemoryFFN: each memory_path row needs children in [0, {self.branching}) "
                             f"or all {GENERIC} (generic), got {memory_path[bad.any(1)][0].tolist()}")
        rows, node = [], torch.zeros_like(memory_path[:, 0])
        for level, blocks in enumerate(self.blocks_per_level()):
            node = node * self.branching + memory_path[:, level].clamp(min=0)
            rows.append(torch.where(generic[:, level], blocks, node))
        return torch.stack(rows, dim=1)

    def fetch(self, memory_path: torch.Tensor):
        """Gather each distinct path's blocks once; returns (w_in (U, 2, R, d), w_out (U, d, R), inverse (batch,))."""
        unique_rows, inverse = torch.unique(self.block_indices(memory_path), dim=0, return_inverse=True)
        w_in, w_out = [], []
        for level, r in enumerate(self.block_sizes):
            rows = unique_rows[:, level]
            w_in.append(F.embedding(rows, self.bank_in[level], sparse=True).view(-1, 2, r, self.d_model))
            w_out.append(F.embedding(rows, self.bank_out[level], sparse=True).view(-1, self.d_model, r))
        return torch.cat(w_in, dim=2), torch.cat(w_out, dim=2), inverse

    def forward(self, x: torch.Tensor, memory_path: torch.Tensor | None = None) -> torch.Tensor:
        y = self.anchor(x)
        if memory_path is None:
            return y
        w_in, w_out, inverse = self.fetch(memory_path.to(x.device))
        w_in, w_out = w_in.to(x.dtype)[inverse], w_out.to(x.dtype)[inverse]  # per sample, from its group's blocks
        gate, up = torch.einsum("bsd,bkrd->kbsr", x, w_in)
        return y + torch.einsum("bsr,bdr->bsd", F.silu(gate) * up, w_out)
