"""MAD's associative-recall variants: noisy recall and fuzzy recall.

noisy_recall: ``num_kv_pairs`` key-value pairs (keys distinct, from [0, H); values from [H, 2H), H = (vocab_size
- noise_vocab_size) // 2), with noise tokens (from the last ``noise_vocab_size`` ids) inserted between the
pairs at random, filling the context to ``input_seq_len - 2 * num_kv_pairs``; then every key is queried once, in
random order, as ``key value`` (the value teacher-forced after it is scored).

fuzzy_recall: keys and values are several tokens long (``key_len``, ``value_len``; keys from [0, vocab/2),
values from [vocab/2, vocab), keys distinct as token tuples, so a key token alone does not identify a pair);
the context lists the pairs, then every key is queried once, in random order, and each value token is scored
(the first after the last key token, the next after each value token). MAD draws variable key and value
lengths; here they are fixed per task, so slices vary only the number of pairs.
"""
from dataclasses import dataclass

import torch

from zoo.tasks.draws import context_then_queries, distinct_ints, query_block
from zoo.tasks.mqar import Segment
from zoo.tasks.recall_datamodule import RecallTaskDataModule
from zoo.checks import require_positive_int


# ---- noisy recall ------------------------------------------------------------------------------------------------
def check_noisy(vocab_size: int, input_seq_len: int, num_kv_pairs: int, noise_vocab_size: int):
    require_positive_int("noise_vocab_size", noise_vocab_size, "noisy_recall")
    half = (vocab_size - noise_vocab_size) // 2
    if half < num_kv_pairs:
        raise ValueError(f"noisy_recall: need (vocab_size - noise_vocab_size) // 2 >= num_kv_pairs distinct keys, got "
                         f"vocab_size={vocab_size}, noise_vocab_size={noise_vocab_size}, num_kv_pairs={num_kv_pairs}")
    if 4 * num_kv_pairs > input_seq_len:
        raise ValueError(f"noisy_recall: need 4 * num_kv_pairs <= input_seq_len (pairs and queries), got "
                         f"num_kv_pairs={num_kv_pairs}, input_seq_len={input_seq_len}")


def noisy_recall(vocab_size: int, num_examples: int, input_seq_len: int, num_kv_pairs: int, noise_vocab_size: int,
                 generator: torch.Generator):
    """(inputs, labels) of shape (num_examples, input_seq_len); context length input_seq_len - 2 * num_kv_pairs."""
    check_noisy(vocab_size, input_seq_len, num_kv_pairs, noise_vocab_size)
    n, kv = num_examples, num_kv_pairs
    half = (vocab_size - noise_vocab_size) // 2
    context = input_seq_len - 2 * kv
    keys = distinct_ints(n, kv, 0, half, generator)
    values = torch.randint(half, 2 * half, (n, kv), generator=generator)
    # the context as units: kv pairs (two positions) and noise tokens (one), pairs at random unit slots
    units = context - kv
    pair_units = distinct_ints(n, kv, 0, units, generator).sort(dim=1).values
    unit_len = torch.ones(n, units, dtype=torch.long).scatter_(1, pair_units, 2)
    starts = (unit_len.cumsum(dim=1) - unit_len).gather(1, pair_units)
    tokens = torch.randint(vocab_size - noise_vocab_size, vocab_size, (n, context), generator=generator)
    tokens.scatter_(1, starts, keys).scatter_(1, starts + 1, values)
    queries, query_labels = query_block(keys[..., None], values[..., None], generator)
    return context_then_queries(tokens, queries, query_labels)


class NoisyRecallDataModule(RecallTaskDataModule):
    task_name = "noisy_recall"
    slice_type = Segment  # (input_seq_len, num_kv_pairs, num_examples), keyed L<len>_kv<pairs> as MQAR

    def __init__(self, *args, noise_vocab_size: int = 16, **kwargs):
        self.noise_vocab_size = noise_vocab_size
        super().__init__(*args, **kwargs)

    def check(self, spec):
        check_noisy(self.vocab_size, spec.input_seq_len, spec.num_kv_pairs, self.noise_vocab_size)

    def lengths(self, spec):
        return spec.input_seq_len, spec.input_seq_len - 2 * spec.num_kv_pairs

    def draw(self, spec, num_examples, generator):
        return noisy_recall(self.vocab_size, num_examples, spec.input_seq_len, spec.num_kv_pairs,
                            self.noise_vocab_size, generator)

    def columns(self, spec):
        return {"num_kv_pairs": spec.num_kv_pairs}


# ---- fuzzy recall ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FuzzySlice:
    num_kv_pairs: int
    num_examples: int

    @property
    def slice_key(self) -> str:
        return f"kv{self.num_kv_pairs}"


_MAX_KEY_SPACE = 1 << 20


def check_fuzzy(vocab_size: int, num_kv_pairs: int, key_len: int, value_len: int):
    for name, value in (("key_len", key_len), ("value_len", value_len)):
        require_positive_int(name, value, "fuzzy_recall")
    half = vocab_size // 2
    if half < 2:
        raise ValueError(f"fuzzy_recall: vocab_size must be at least 4, got {vocab_size}")
    space = half ** key_len
    if space < num_kv_pairs:
        raise ValueError(f"fuzzy_recall: (vocab_size // 2) ** key_len = {space} distinct keys, fewer than "
                         f"num_kv_pairs={num_kv_pairs}")
    if space > _MAX_KEY_SPACE:
        raise ValueError(f"fuzzy_recall: (vocab_size // 2) ** key_len = {space} keys; at most {_MAX_KEY_SPACE} "
                         f"are supported (lower key_len or vocab_size)")


def fuzzy_recall(vocab_size: int, num_examples: int, num_kv_pairs: int, key_len: int, value_len: int,
                 generator: torch.Generator):
    """(inputs, labels) of shape (num_examples, 2 * num_kv_pairs * (key_len + value_len)); context is the first half."""
    check_fuzzy(vocab_size, num_kv_pairs, key_len, value_len)
    n, kv, half = num_examples, num_kv_pairs, vocab_size // 2
    key_ids = distinct_ints(n, kv, 0, half ** key_len, generator)
    digits = half ** torch.arange(key_len - 1, -1, -1)
    keys = (key_ids[..., None] // digits) % half                                    # (n, kv, key_len)
    values = torch.randint(half, vocab_size, (n, kv, value_len), generator=generator)
    context = torch.cat([keys, values], dim=2).reshape(n, -1)
    queries, query_labels = query_block(keys, values, generator)
    return context_then_queries(context, queries, query_labels)


class FuzzyRecallDataModule(RecallTaskDataModule):
    task_name = "fuzzy_recall"
    slice_type = FuzzySlice

    def __init__(self, *args, key_len: int = 2, value_len: int = 2, **kwargs):
        self.key_len, self.value_len = key_len, value_len
        super().__init__(*args, **kwargs)

    def check(self, spec):
        check_fuzzy(self.vocab_size, spec.num_kv_pairs, self.key_len, self.value_len)

    def lengths(self, spec):
        context = spec.num_kv_pairs * (self.key_len + self.value_len)
        return 2 * context, context

    def draw(self, spec, num_examples, generator):
        return fuzzy_recall(self.vocab_size, num_examples, spec.num_kv_pairs, self.key_len, self.value_len, generator)

    def columns(self, spec):
        return {"num_kv_pairs": spec.num_kv_pairs, "key_len": self.key_len, "value_len": self.value_len}
