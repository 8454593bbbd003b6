"""Vectorised random draws shared by the recall tasks; every draw takes the caller's torch.Generator."""
import torch

from zoo.tasks.data import IGNORE_INDEX

_MAX_DRAW_CELLS = 1 << 24  # rows x range drawn at once: bounds memory for wide ranges


def distinct_ints(rows: int, k: int, low: int, high: int, generator: torch.Generator) -> torch.Tensor:
    """(rows, k) int64: k distinct values per row from [low, high), uniformly, in random order."""
    width = high - low
    chunk = max(1, _MAX_DRAW_CELLS // max(1, width))
    draws = [torch.rand(min(chunk, rows - start), width, generator=generator).topk(k, dim=1).indices
             for start in range(0, rows, chunk)]
    return low + (torch.cat(draws) if draws else torch.empty(0, k, dtype=torch.long))


def shuffle_rows(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random permutation of dim 1 per row (trailing dims move along)."""
    order = torch.rand(x.shape[:2], generator=generator).argsort(dim=1)
    return x.gather(1, order.view(*order.shape, *([1] * (x.dim() - 2))).expand_as(x))


def query_block(keys: torch.Tensor, answers: torch.Tensor, generator: torch.Generator):
    """Queries in random order, each its key tokens followed by its answer tokens (teacher-forced).

    keys (n, q, key_len), answers (n, q, answer_len) -> inputs, labels (n, q * (key_len + answer_len)): the label
    after the last key token is the first answer token, after answer token i the next one; -100 elsewhere (so a
    query's answer is scored before it is shown).
    """
    n, q, key_len = keys.shape
    answer_len = answers.shape[2]
    pairs = shuffle_rows(torch.cat([keys, answers], dim=2), generator)
    labels = torch.full_like(pairs, IGNORE_INDEX)
    labels[:, :, key_len - 1:key_len - 1 + answer_len] = pairs[:, :, key_len:]
    return pairs.reshape(n, -1), labels.reshape(n, -1)


def context_then_queries(context: torch.Tensor, queries: torch.Tensor, query_labels: torch.Tensor):
    """(inputs, labels): the context, never scored (-100), followed by the query block and its labels."""
    inputs = torch.cat([context, queries], dim=1)
    labels = torch.cat([torch.full_like(context, IGNORE_INDEX), query_labels], dim=1)
    return inputs, labels
