"""Multi-hop variable tracking (RULER's variable tracking over synthetic tokens).

``num_chains`` chains of assignments ``x1 = v; x2 = x1; ...; xh = x(h-1)`` (h = ``num_hops``), each assignment two
tokens ``lhs rhs``; the chains are interleaved at random (each keeps its own order); then every chain's last
name is queried once, in random order, as ``name value`` (the value scored, then teacher-forced). Names are
distinct, from [0, vocab_size // 2); values from [vocab_size // 2, vocab_size). Slices vary the hops: the
number of references to follow.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zoo.tasks.draws import context_then_queries, distinct_ints, query_block
from zoo.tasks.recall_datamodule import RecallTaskDataModule


@dataclass(frozen=True)
class HopSlice:
    num_chains: int
    num_hops: int
    num_examples: int

    @property
    def slice_key(self) -> str:
        return f"chains{self.num_chains}_hops{self.num_hops}"


def check_multi_hop(vocab_size: int, num_chains: int, num_hops: int):
    if num_chains * num_hops > vocab_size // 2:
        raise ValueError(f"multi_hop: num_chains * num_hops = {num_chains * num_hops} distinct names, more than "
                         f"vocab_size // 2 = {vocab_size // 2}")


def multi_hop(vocab_size: int, num_examples: int, num_chains: int, num_hops: int, generator: torch.Generator):
    """(inputs, labels) of shape (num_examples, 2 * num_chains * (num_hops + 1)); context 2 * num_chains * num_hops."""
    check_multi_hop(vocab_size, num_chains, num_hops)
    n, chains, hops, half = num_examples, num_chains, num_hops, vocab_size // 2
    names = distinct_ints(n, chains * hops, 0, half, generator).view(n, chains, hops)
    values = torch.randint(half, vocab_size, (n, chains), generator=generator)
    # a random interleaving: each chain id appears `hops` times; its k-th appearance is its k-th assignment
    chain_of = torch.arange(chains).repeat_interleave(hops).expand(n, -1)
    chain_of = chain_of.gather(1, torch.rand(n, chains * hops, generator=generator).argsort(dim=1))
    step = (F.one_hot(chain_of, chains).cumsum(dim=1).gather(2, chain_of[..., None])[..., 0] - 1)
    lhs = names[torch.arange(n)[:, None], chain_of, step]
    previous = names[torch.arange(n)[:, None], chain_of, (step - 1).clamp(min=0)]
    rhs = torch.where(step == 0, values.gather(1, chain_of), previous)
    context = torch.stack([lhs, rhs], dim=2).reshape(n, -1)
    queries, query_labels = query_block(names[:, :, -1:], values[..., None], generator)
    return context_then_queries(context, queries, query_labels)


class MultiHopDataModule(RecallTaskDataModule):
    task_name = "multi_hop"
    slice_type = HopSlice

    def check(self, spec):
        check_multi_hop(self.vocab_size, spec.num_chains, spec.num_hops)

    def lengths(self, spec):
        context = 2 * spec.num_chains * spec.num_hops
        return context + 2 * spec.num_chains, context

    def draw(self, spec, num_examples, generator):
        return multi_hop(self.vocab_size, num_examples, spec.num_chains, spec.num_hops, generator)

    def columns(self, spec):
        return {"num_chains": spec.num_chains, "num_hops": spec.num_hops}
