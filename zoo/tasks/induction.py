"""Induction heads (Mamba paper): after a trigger token, recall the token that followed its earlier occurrence.

One example of length ``input_seq_len``: random tokens from [1, vocab_size); at a random position the trigger
(token 0) followed by the answer; the last position holds the trigger again and its label is the answer (the
only scored position). Trained at one length and tested at longer ones: length extrapolation as slices.
"""
from dataclasses import dataclass

import torch

from zoo.tasks.data import IGNORE_INDEX
from zoo.tasks.recall_datamodule import RecallTaskDataModule

TRIGGER = 0


@dataclass(frozen=True)
class InductionSlice:
    input_seq_len: int
    num_examples: int

    @property
    def slice_key(self) -> str:
        return f"L{self.input_seq_len}"


def check_induction(vocab_size: int, input_seq_len: int):
    if vocab_size < 3:
        raise ValueError(f"induction: vocab_size must be at least 3 (the trigger and two tokens), got {vocab_size}")
    if input_seq_len < 4:
        raise ValueError(f"induction: input_seq_len must be at least 4 (trigger, answer, filler, trigger), "
                         f"got {input_seq_len}")


def induction(vocab_size: int, num_examples: int, input_seq_len: int, generator: torch.Generator):
    """(inputs, labels) of shape (num_examples, input_seq_len); the context is all but the last position."""
    check_induction(vocab_size, input_seq_len)
    n, length = num_examples, input_seq_len
    inputs = torch.randint(1, vocab_size, (n, length), generator=generator)
    first = torch.randint(0, length - 3, (n, 1), generator=generator)  # the answer stays off the last two places
    answers = torch.randint(1, vocab_size, (n, 1), generator=generator)
    inputs.scatter_(1, first, TRIGGER).scatter_(1, first + 1, answers)
    inputs[:, -1] = TRIGGER
    labels = torch.full((n, length), IGNORE_INDEX, dtype=torch.long)
    labels[:, -1:] = answers
    return inputs, labels


class InductionDataModule(RecallTaskDataModule):
    task_name = "induction"
    slice_type = InductionSlice

    def check(self, spec):
        check_induction(self.vocab_size, spec.input_seq_len)

    def lengths(self, spec):
        return spec.input_seq_len, spec.input_seq_len - 1

    def draw(self, spec, num_examples, generator):
        return induction(self.vocab_size, num_examples, spec.input_seq_len, generator)
