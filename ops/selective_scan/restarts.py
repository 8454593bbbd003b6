"""Packed documents for the selective-scan kernels: where the decay is 0, as one byte per (batch, step)."""
import torch

from ops.packing import check_seq_idx, document_restarts


def restart_flags(seq_idx: torch.Tensor | None, u: torch.Tensor) -> torch.Tensor | None:
    """(batch, L) uint8 on u's device, 1 where a packed document starts after position 0 (the kernels zero the
    decay into that step); None without seq_idx or when every row holds one document (the unpacked kernel)."""
    if seq_idx is None:
        return None
    check_seq_idx(seq_idx, u.shape[0], u.shape[-1], "selective_scan")
    restarts = document_restarts(seq_idx.to(u.device))
    return restarts.to(torch.uint8).contiguous() if bool(restarts.any()) else None
