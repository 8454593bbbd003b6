"""Shared pieces of the chunked (matmul) forms of decaying linear recurrences (``ops.ssd``, ``ops.gla``).

The sequence is cut into chunks of ``chunk_size``; inside a chunk the outputs come from pairwise products (a
masked matmul), across chunks from one state per chunk boundary. Packed rows (``seq_idx``) restart the state at
each document: in the chunked form that is four masks, built here once for both ops.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def pad_time(x: torch.Tensor, length: int, value: float = 0.0) -> torch.Tensor:
    """Pad dim 1 (time) of ``x`` at the end to ``length``."""
    missing = length - x.shape[1]
    if missing == 0:
        return x
    pad = [0, 0] * (x.dim() - 2) + [0, missing]
    return F.pad(x, pad, value=value)


def padded_length(length: int, chunk_size: int) -> int:
    return -(-length // chunk_size) * chunk_size


@dataclass
class DocumentMasks:
    """Which terms of a chunked recurrence stay within one document; every tensor is bool, chunked as (b, c, ...).

    pairs (b, c, Q, Q): [t, s] position s is in t's document (intra-chunk products);
    to_end (b, c, Q): position s is in the document of its chunk's last position (a chunk's own state);
    from_start (b, c, Q): position t continues the state that entered its chunk (the previous chunk's last
    document; for the first chunk, the first document, which continues the initial state);
    boundary_ids (b, c + 1): the document of the state at each chunk boundary (initial state first), so that a
    state carried from boundary j to boundary i survives only when both ids agree.
    """
    pairs: torch.Tensor
    to_end: torch.Tensor
    from_start: torch.Tensor
    boundary_ids: torch.Tensor


def document_masks(seq_idx: torch.Tensor, chunk_size: int) -> DocumentMasks:
    """Masks for ``seq_idx`` (b, l) integer, non-decreasing; padded here to whole chunks with its last value."""
    b, length = seq_idx.shape
    padded = pad_time(seq_idx[..., None], padded_length(length, chunk_size), 0)[..., 0]
    padded[:, length:] = seq_idx[:, -1:]
    chunks = padded.view(b, -1, chunk_size)                                       # (b, c, Q)
    ends = chunks[:, :, -1]                                                       # (b, c)
    boundary_ids = torch.cat([seq_idx[:, :1], ends], dim=1)                       # (b, c + 1)
    return DocumentMasks(
        pairs=chunks[:, :, :, None] == chunks[:, :, None, :],
        to_end=chunks == ends[..., None],
        from_start=chunks == boundary_ids[:, :-1, None],
        boundary_ids=boundary_ids,
    )


def causal_mask(chunk_size: int, device) -> torch.Tensor:
    """(Q, Q) bool: [t, s] is s <= t."""
    return torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=device).tril()


def masked_exp(exponent: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """exp(exponent) where ``keep``, else 0, without ever taking exp of a dropped (possibly huge) exponent, so
    neither the value nor the gradient can overflow."""
    return torch.exp(exponent.masked_fill(~keep, float("-inf")))
