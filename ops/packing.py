"""Packed sequences: several documents in one row, told apart by ``seq_idx``.

``seq_idx`` (batch, seq) integer: the document index of each position, non-decreasing along a row (mamba-ssm's
convention); a new document starts wherever it changes. fla's ``cu_seqlens`` (cumulative document lengths of one
flat sequence) converts with ``seq_idx_from_cu_seqlens``. The helpers here are tensor-only, shared by the ops and
by the zoo's mixers: validation, where documents start, positions within a document, and a gather of every
document into its own (padded) row and back, which turns any causal op into its per-document version.
"""
import torch


def check_seq_idx(seq_idx: torch.Tensor, batch: int, length: int, owner: str):
    """One clear error for a seq_idx that is not a non-decreasing (batch, seq) integer tensor."""
    if not isinstance(seq_idx, torch.Tensor) or seq_idx.dtype.is_floating_point or seq_idx.dtype.is_complex \
            or seq_idx.dtype == torch.bool:
        raise ValueError(f"{owner}: seq_idx must be an integer tensor of shape (batch, seq), got "
                         f"{type(seq_idx).__name__ if not isinstance(seq_idx, torch.Tensor) else seq_idx.dtype}")
    if tuple(seq_idx.shape) != (batch, length):
        raise ValueError(f"{owner}: seq_idx must have shape (batch, seq) = {(batch, length)}, "
                         f"got {tuple(seq_idx.shape)}")
    if length > 1 and bool((seq_idx[:, 1:] < seq_idx[:, :-1]).any()):
        raise ValueError(f"{owner}: seq_idx must be non-decreasing along each row (documents are contiguous)")


def document_starts(seq_idx: torch.Tensor) -> torch.Tensor:
    """(batch, seq) bool: True at the first position of every document (position 0 included)."""
    starts = torch.ones_like(seq_idx, dtype=torch.bool)
    starts[:, 1:] = seq_idx[:, 1:] != seq_idx[:, :-1]
    return starts


def document_restarts(seq_idx: torch.Tensor) -> torch.Tensor:
    """(batch, seq) bool: True where a document starts after position 0, i.e. where a recurrence's decay is 0
    (position 0 continues from an initial state, as without packing)."""
    restarts = document_starts(seq_idx)
    restarts[:, 0] = False
    return restarts


def positions_in_document(seq_idx: torch.Tensor) -> torch.Tensor:
    """(batch, seq) int64: each position's offset from the start of its document (0 at every start)."""
    index = torch.arange(seq_idx.shape[1], device=seq_idx.device).expand_as(seq_idx)
    start_index = torch.where(document_starts(seq_idx), index, torch.zeros_like(index)).cummax(dim=1).values
    return index - start_index


def same_document_shifted(seq_idx: torch.Tensor, shift: int) -> torch.Tensor:
    """(batch, seq) bool: position t - shift exists and is in t's document (causal conv taps, window masks)."""
    same = torch.zeros_like(seq_idx, dtype=torch.bool)
    if shift < seq_idx.shape[1]:
        same[:, shift:] = seq_idx[:, shift:] == seq_idx[:, :seq_idx.shape[1] - shift]
    return same


def seq_idx_from_cu_seqlens(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """fla's cu_seqlens ([0, len_0, len_0 + len_1, ..., total]) -> seq_idx (1, total) for one flat packed row."""
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or int(cu_seqlens[0]) != 0 \
            or bool((cu_seqlens[1:] <= cu_seqlens[:-1]).any()):
        raise ValueError(f"cu_seqlens must be a 1-d increasing tensor starting at 0, got {cu_seqlens.tolist()}")
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    return torch.repeat_interleave(torch.arange(len(lengths), device=cu_seqlens.device), lengths)[None]


class DocumentLayout:
    """Where each position of packed rows sits when every document gets its own row (padded at the end).

    ``unpack(x)`` (batch, seq, ...) -> (documents, longest, ...); ``repack(y)`` back. Padding comes after a
    document's tokens, so a causal op run on the unpacked rows gives each document exactly what it would alone.
    Both are gathers, so gradients flow through them.
    """

    def __init__(self, seq_idx: torch.Tensor):
        batch, length = seq_idx.shape
        starts = document_starts(seq_idx)
        self.document = starts.flatten().cumsum(0) - 1                      # (batch * seq,) global document id
        self.position = positions_in_document(seq_idx).flatten()
        self.num_documents = int(starts.sum())
        self.longest = int(self.position.max()) + 1
        self.batch, self.length = batch, length

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(self.batch * self.length, *x.shape[2:])
        rows = flat.new_zeros(self.num_documents * self.longest, *x.shape[2:])
        rows = rows.index_copy(0, self.document * self.longest + self.position, flat)
        return rows.view(self.num_documents, self.longest, *x.shape[2:])

    def repack(self, y: torch.Tensor) -> torch.Tensor:
        flat = y.reshape(self.num_documents * self.longest, *y.shape[2:])
        return flat[self.document * self.longest + self.position].view(self.batch, self.length, *y.shape[2:])


def cu_seqlens_from_seq_idx(seq_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """seq_idx (batch, seq) -> fla's cu_seqlens for the rows flattened into one (every document of every row in
    order), plus each row's first and last document index in that flat order (to place an initial state per row
    and to read back each row's final state)."""
    starts = document_starts(seq_idx)
    flat_starts = starts.flatten().nonzero().flatten()
    total = torch.tensor([seq_idx.numel()], device=seq_idx.device)
    cu_seqlens = torch.cat([flat_starts, total])
    last = starts.sum(1).cumsum(0) - 1
    first = torch.cat([last.new_zeros(1), last[:-1] + 1])
    return cu_seqlens, first, last
