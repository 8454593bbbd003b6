"""Selective copying (Mamba paper, MAD): data tokens scattered among noise, reproduced in order after a marker.

Layout of one example of length ``input_seq_len`` with ``num_tokens`` data tokens:

    context (input_seq_len - num_tokens positions): noise token 0, with the data tokens at random positions
    then num_tokens copy markers (token 1); the label at the i-th marker is the i-th data token

Data tokens are drawn with replacement from [2, vocab_size). The MAD / Mamba setting is vocabulary 16, length
256, 16 tokens. The answers are not teacher-forced: the model must keep the order itself.
"""
from dataclasses import dataclass

import torch

from zoo.tasks.draws import distinct_ints
from zoo.tasks.data import IGNORE_INDEX
from zoo.tasks.recall_datamodule import RecallTaskDataModule

NOISE, MARKER, FIRST_DATA_TOKEN = 0, 1, 2


@dataclass(frozen=True)
class CopySlice:
    input_seq_len: int
    num_tokens: int
    num_examples: int

    @property
    def slice_key(self) -> str:
        return f"L{self.input_seq_len}_tok{self.num_tokens}"


def check_copy(vocab_size: int, input_seq_len: int, num_tokens: int):
    if vocab_size < 3:
        raise ValueError(f"selective_copy: vocab_size must be at least 3 (noise, marker, a data token), got {vocab_size}")
    if 2 * num_tokens > input_seq_len:
        raise ValueError(f"selective_copy: need 2 * num_tokens <= input_seq_len (the tokens and their copies), got "
                         f"num_tokens={num_tokens}, input_seq_len={input_seq_len}")


def selective_copy(vocab_size: int, num_examples: int, input_seq_len: int, num_tokens: int,
                   generator: torch.Generator):
    """(inputs, labels) of shape (num_examples, input_seq_len); context length is input_seq_len - num_tokens."""
    check_copy(vocab_size, input_seq_len, num_tokens)
    n, k, context = num_examples, num_tokens, input_seq_len - num_tokens
    positions = distinct_ints(n, k, 0, context, generator).sort(dim=1).values
    data = torch.randint(FIRST_DATA_TOKEN, vocab_size, (n, k), generator=generator)
    noisy = torch.full((n, context), NOISE, dtype=torch.long).scatter_(1, positions, data)
    inputs = torch.cat([noisy, torch.full((n, k), MARKER, dtype=torch.long)], dim=1)
    labels = torch.cat([torch.full((n, context), IGNORE_INDEX, dtype=torch.long), data], dim=1)
    return inputs, labels


class SelectiveCopyDataModule(RecallTaskDataModule):
    task_name = "selective_copy"
    slice_type = CopySlice

    def check(self, spec):
        check_copy(self.vocab_size, spec.input_seq_len, spec.num_tokens)

    def lengths(self, spec):
        return spec.input_seq_len, spec.input_seq_len - spec.num_tokens

    def draw(self, spec, num_examples, generator):
        return selective_copy(self.vocab_size, num_examples, spec.input_seq_len, spec.num_tokens, generator)

    def columns(self, spec):
        return {"num_tokens": spec.num_tokens}
