"""MQAR variants zoology added: forgetting (keys rebound later) and compositional (two-token keys on a grid).

Both use the suite's compact query layout: after the context every key is queried once, in random order, as
``key value`` (value scored, then teacher-forced), instead of MQAR's power-law gaps with random fillers.

mqar_forgetting: ``num_kv_pairs`` pairs (keys distinct from [0, V/2), values from [V/2, V)), then
``num_updates`` of those keys again with a new, different value; the answer is the latest value.

mqar_compositional: keys are pairs (K1, K2) on a ``grid_size`` x ``grid_size`` grid (K1 from [0, V/3), K2 from
[V/3, 2V/3), values from [2V/3, V)), so neither key token alone names the value; the context lists the
``grid_size**2`` triples ``K1 K2 value`` in random order.
"""
from dataclasses import dataclass

import torch

from zoo.tasks.draws import context_then_queries, distinct_ints, query_block, shuffle_rows
from zoo.tasks.recall_datamodule import RecallTaskDataModule


# ---- forgetting --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ForgettingSlice:
    num_kv_pairs: int
    num_updates: int
    num_examples: int

    @property
    def slice_key(self) -> str:
        return f"kv{self.num_kv_pairs}_upd{self.num_updates}"


def check_forgetting(vocab_size: int, num_kv_pairs: int, num_updates: int):
    if num_updates > num_kv_pairs:
        raise ValueError(f"mqar_forgetting: num_updates={num_updates} must not exceed num_kv_pairs={num_kv_pairs}")
    if vocab_size // 2 < num_kv_pairs or vocab_size - vocab_size // 2 < 2:
        raise ValueError(f"mqar_forgetting: vocab_size={vocab_size} is too small: need vocab_size // 2 >= "
                         f"num_kv_pairs={num_kv_pairs} keys and two values")


def mqar_forgetting(vocab_size: int, num_examples: int, num_kv_pairs: int, num_updates: int,
                    generator: torch.Generator):
    """(inputs, labels) of shape (n, 2 * (2 * num_kv_pairs + num_updates)); context 2 * (num_kv_pairs + num_updates)."""
    check_forgetting(vocab_size, num_kv_pairs, num_updates)
    n, kv, half = num_examples, num_kv_pairs, vocab_size // 2
    values_span = vocab_size - half
    keys = distinct_ints(n, kv, 0, half, generator)
    values = torch.randint(half, vocab_size, (n, kv), generator=generator)
    updated = distinct_ints(n, num_updates, 0, kv, generator)                    # which keys, in update order
    shift = torch.randint(1, values_span, (n, num_updates), generator=generator)  # never the old value
    new_values = half + (values.gather(1, updated) - half + shift) % values_span
    final = values.scatter(1, updated, new_values)
    first = torch.stack([keys, values], dim=2).reshape(n, -1)
    updates = torch.stack([keys.gather(1, updated), new_values], dim=2).reshape(n, -1)
    context = torch.cat([first, updates], dim=1)
    queries, query_labels = query_block(keys[..., None], final[..., None], generator)
    return context_then_queries(context, queries, query_labels)


class ForgettingMQARDataModule(RecallTaskDataModule):
    task_name = "mqar_forgetting"
    slice_type = ForgettingSlice

    def check(self, spec):
        check_forgetting(self.vocab_size, spec.num_kv_pairs, spec.num_updates)

    def lengths(self, spec):
        context = 2 * (spec.num_kv_pairs + spec.num_updates)
        return context + 2 * spec.num_kv_pairs, context

    def draw(self, spec, num_examples, generator):
        return mqar_forgetting(self.vocab_size, num_examples, spec.num_kv_pairs, spec.num_updates, generator)

    def columns(self, spec):
        return {"num_kv_pairs": spec.num_kv_pairs, "num_updates": spec.num_updates}


# ---- compositional -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CompositionalSlice:
    grid_size: int
    num_examples: int

    @property
    def slice_key(self) -> str:
        return f"grid{self.grid_size}"


def check_compositional(vocab_size: int, grid_size: int):
    if vocab_size // 3 < grid_size:
        raise ValueError(f"mqar_compositional: need vocab_size // 3 >= grid_size={grid_size} tokens per key part, "
                         f"got vocab_size={vocab_size}")


def mqar_compositional(vocab_size: int, num_examples: int, grid_size: int, generator: torch.Generator):
    """(inputs, labels) of shape (n, 6 * grid_size**2); the context is the first half."""
    check_compositional(vocab_size, grid_size)
    n, g, third = num_examples, grid_size, vocab_size // 3
    first = distinct_ints(n, g, 0, third, generator)
    second = distinct_ints(n, g, third, 2 * third, generator)
    keys = torch.stack([first.repeat_interleave(g, dim=1), second.repeat(1, g)], dim=2)  # (n, g*g, 2): the grid
    values = torch.randint(2 * third, vocab_size, (n, g * g, 1), generator=generator)
    context = shuffle_rows(torch.cat([keys, values], dim=2), generator).reshape(n, -1)
    queries, query_labels = query_block(keys, values, generator)
    return context_then_queries(context, queries, query_labels)


class CompositionalMQARDataModule(RecallTaskDataModule):
    task_name = "mqar_compositional"
    slice_type = CompositionalSlice

    def check(self, spec):
        check_compositional(self.vocab_size, spec.grid_size)

    def lengths(self, spec):
        context = 3 * spec.grid_size ** 2
        return 2 * context, context

    def draw(self, spec, num_examples, generator):
        return mqar_compositional(self.vocab_size, num_examples, spec.grid_size, generator)

    def columns(self, spec):
        return {"grid_size": spec.grid_size, "num_kv_pairs": spec.grid_size ** 2}
