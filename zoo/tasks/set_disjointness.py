"""Set disjointness (JRT, Arora et al. 2024): ``[set A] sep [set B] sep -> the element the sets share``.

Recall hardness for a recurrent model reduces to this task: reading A first, it must keep all of A to check B
against it, so storing the shorter set is cheaper; with the long set first it must store the long one. Both
orders are slices (``order``: short_first / long_first), which JRT's read-twice prompting makes alike.

Elements come from [1, vocab_size) (0 is the separator); A and B are drawn with exactly one shared element,
each in random order; the label at the final separator is the shared element (the only scored position).
"""
from dataclasses import dataclass

import torch

from zoo.tasks.draws import distinct_ints, shuffle_rows
from zoo.tasks.data import IGNORE_INDEX
from zoo.tasks.recall_datamodule import RecallTaskDataModule

SEP = 0


@dataclass(frozen=True)
class DisjointnessSlice:
    size_a: int
    size_b: int
    num_examples: int

    @property
    def slice_key(self) -> str:
        return f"A{self.size_a}_B{self.size_b}"

    @property
    def order(self) -> str:
        if self.size_a == self.size_b:
            return "equal"
        return "short_first" if self.size_a < self.size_b else "long_first"


def check_disjointness(vocab_size: int, size_a: int, size_b: int):
    if size_a + size_b - 1 > vocab_size - 1:
        raise ValueError(f"set_disjointness: the sets need size_a + size_b - 1 = {size_a + size_b - 1} distinct "
                         f"elements, more than vocab_size - 1 = {vocab_size - 1}")


def set_disjointness(vocab_size: int, num_examples: int, size_a: int, size_b: int, generator: torch.Generator):
    """(inputs, labels) of shape (num_examples, size_a + size_b + 2); context is all but the last position."""
    check_disjointness(vocab_size, size_a, size_b)
    n = num_examples
    elements = distinct_ints(n, size_a + size_b - 1, 1, vocab_size, generator)
    shared = elements[:, :1]
    set_a = shuffle_rows(torch.cat([shared, elements[:, 1:size_a]], dim=1), generator)
    set_b = shuffle_rows(torch.cat([shared, elements[:, size_a:]], dim=1), generator)
    sep = torch.full((n, 1), SEP, dtype=torch.long)
    inputs = torch.cat([set_a, sep, set_b, sep], dim=1)
    labels = torch.full_like(inputs, IGNORE_INDEX)
    labels[:, -1:] = shared
    return inputs, labels


class SetDisjointnessDataModule(RecallTaskDataModule):
    task_name = "set_disjointness"
    slice_type = DisjointnessSlice

    def check(self, spec):
        check_disjointness(self.vocab_size, spec.size_a, spec.size_b)

    def lengths(self, spec):
        length = spec.size_a + spec.size_b + 2
        return length, length - 1

    def draw(self, spec, num_examples, generator):
        return set_disjointness(self.vocab_size, num_examples, spec.size_a, spec.size_b, generator)

    def columns(self, spec):
        return {"size_a": spec.size_a, "size_b": spec.size_b, "order": spec.order}
