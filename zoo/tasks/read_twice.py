"""JRT-Prompt ("Just read twice", Arora et al. 2024): repeat the context before the queries.

A recurrent model reading ``context, context, queries`` sees every part of the context again after having seen
all of it once, so it can decide what to keep with the whole context known. Every recall task states its
context length (the leading positions that hold no scored label), and this one function turns any of its draws
into the read-twice form, so the mechanism is shared by every task rather than copied into each.
"""
import torch

from zoo.tasks.data import IGNORE_INDEX


def repeat_context(inputs: torch.Tensor, labels: torch.Tensor, context_len: int):
    """(inputs, labels) of shape (n, L) -> (n, L + context_len): ``inputs[:, :context_len]`` is read twice.

    Labels stay at their answer positions (shifted by the inserted copy); the copy itself scores nothing.
    """
    if not 0 < context_len <= inputs.shape[1]:
        raise ValueError(f"read_twice: context_len must be in [1, {inputs.shape[1]}], got {context_len}")
    if bool((labels[:, :context_len] != IGNORE_INDEX).any()):
        raise ValueError("read_twice: the context to repeat holds scored labels; only a prefix without answers "
                         "can be read twice")
    copy = inputs[:, :context_len]
    unscored = torch.full_like(copy, IGNORE_INDEX)
    return torch.cat([copy, inputs], dim=1).contiguous(), torch.cat([unscored, labels], dim=1).contiguous()
