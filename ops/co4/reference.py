"""The definition of the causal running top-k, in pure PyTorch: one time step at a time, a stable sort of the
carried k entries and the new token (slow on purpose: it is the oracle the kernel is tested against).

values (B, T, C): per channel and per step t, the k largest of the entries seen so far, ranked by ``ranking_key``
(the value rounded to bfloat16), ties to the earlier entry. The entries are an optional initial table (B, k, C),
sorted that way, whose first ``initial_count`` slots hold entries older than every token, then the tokens s <= t.

Returns (top, rank, index): top (B, T, k, C) the values themselves (row r: the r-th largest; 0 in the rows the
prefix cannot fill yet), rank (B, T, C) int64 where token t stands in its own prefix (k when it is not among the
top k), index (B, T, k, C) int64 the source of each row in ``torch.cat([initial, values], dim=1)`` (-1 for an
unfilled row). top carries the gradient: each row's gradient goes back to its source.
"""
import torch


def ranking_key(values: torch.Tensor) -> torch.Tensor:
    """What the top-k ranks by: the value rounded to bfloat16 (8 significant bits), in the input's dtype; the rows
    themselves keep full precision.

    Equal inputs (a repeated token) give equal values, but a one-token decode step computes its projection with a
    different matrix shape than a prefill and can land one ulp away: with exact keys that ulp would flip the tie
    and the token's rank. Rounding first makes such near-equal values tie exactly, and ties go to the earlier token.
    """
    return values.detach().to(torch.bfloat16).to(values.dtype)


def running_topk_indices(values: torch.Tensor, k: int, initial: torch.Tensor, initial_count: int):
    """(index (B, T, k, C), rank (B, T, C)) without a graph; see the module docstring."""
    B, T, C = values.shape
    device = values.device
    keys = ranking_key(values)
    with torch.no_grad():
        slot = torch.arange(k, device=device)[None, :, None]
        table_key = ranking_key(initial).masked_fill(slot >= initial_count, float("-inf"))  # (B, k, C)
        table_index = torch.arange(k, device=device)[None, :, None].expand(B, k, C).clone()
        count = initial_count
        index = torch.full((B, T, k, C), -1, dtype=torch.int64, device=device)
        rank = torch.empty((B, T, C), dtype=torch.int64, device=device)
        for t in range(T):
            # candidates in time order: the filled table slots (earlier), the new token, then the empty slots;
            # a stable descending sort keeps that order among equal keys, so ties go to the earlier entry
            new_key, new_index = keys[:, t: t + 1], torch.full((B, 1, C), k + t, dtype=torch.int64, device=device)
            cand_key = torch.cat([table_key[:, :count], new_key, table_key[:, count:]], dim=1)
            cand_index = torch.cat([table_index[:, :count], new_index, table_index[:, count:]], dim=1)
            order = torch.sort(cand_key, dim=1, descending=True, stable=True).indices
            rank[:, t] = (order == count).to(torch.int64).argmax(dim=1).clamp(max=k)
            count = min(count + 1, k)
            table_key = cand_key.gather(1, order)[:, :k]
            table_index = cand_index.gather(1, order)[:, :k]
            index[:, t, :count] = table_index[:, :count]
    return index, rank


def running_topk_reference(values: torch.Tensor, k: int, initial: torch.Tensor | None = None,
                           initial_count: int = 0):
    """(top, rank, index) of the running top-k; see the module docstring."""
    B, T, C = values.shape
    if initial is None:
        initial = values.new_zeros(B, k, C)
    index, rank = running_topk_indices(values, k, initial, initial_count)
    # one zero row after the sources stands for the unfilled rows (index -1)
    source = torch.cat([initial, values, values.new_zeros(B, 1, C)], dim=1)
    picked = torch.where(index < 0, k + T, index).reshape(B, T * k, C)
    top = torch.gather(source, 1, picked).view(B, T, k, C)
    return top, rank, index
