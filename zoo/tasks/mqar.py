"""Multi-query associative recall (MQAR), with zoology's semantics.

A sequence starts with ``num_kv_pairs`` key-value pairs (keys from [1, V/2), values from [V/2, V)), then each
key is queried once, at a gap drawn from a power law that favours short distances; the label at a query
position is the value bound to that key, and -100 everywhere else. Filler positions hold random tokens.

Everything is drawn from a ``torch.Generator`` seeded by the caller: no global RNG is touched.
"""
from dataclasses import dataclass

import torch

from zoo.checks import require_positive_int
from zoo.tasks.data import IGNORE_INDEX  # noqa: F401  (also imported from here by users and tests)

_ROWS_PER_DRAW = 4096  # examples drawn at once: bounds memory when sampling keys without replacement


def check_config(vocab_size: int, input_seq_len: int, num_kv_pairs: int):
    """Raise ValueError naming the violated constraint of an impossible MQAR configuration."""
    for name, value in (("vocab_size", vocab_size), ("input_seq_len", input_seq_len), ("num_kv_pairs", num_kv_pairs)):
        require_positive_int(name, value, "MQAR")
    if input_seq_len % 2:
        raise ValueError(f"MQAR: input_seq_len must be even (pairs of tokens), got {input_seq_len}")
    if vocab_size <= input_seq_len:
        raise ValueError(f"MQAR: vocab_size must be larger than input_seq_len, got vocab_size={vocab_size} "
                         f"<= input_seq_len={input_seq_len}")
    if 4 * num_kv_pairs > input_seq_len:
        raise ValueError(f"MQAR: need 4 * num_kv_pairs <= input_seq_len (room for the pairs and their queries), "
                         f"got num_kv_pairs={num_kv_pairs}, input_seq_len={input_seq_len} "
                         f"(at most {input_seq_len // 4} pairs)")


def _sample_without_replacement(weights: torch.Tensor, rows: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """k distinct indices per row, drawn with probability proportional to ``weights`` (1-D).

    Gumbel-top-k: the k largest of log(w) + Gumbel noise are a draw without replacement in proportion to w
    (the same distribution as torch.multinomial(replacement=False), an order of magnitude faster here).
    """
    log_weights = weights.double().log().float()
    draws = []
    for start in range(0, rows, _ROWS_PER_DRAW):
        n = min(_ROWS_PER_DRAW, rows - start)
        uniform = torch.rand(n, weights.numel(), generator=generator).clamp_(min=1e-20)
        gumbel = -torch.log(-torch.log(uniform))
        draws.append((log_weights + gumbel).topk(k, dim=1).indices)
    return torch.cat(draws) if draws else torch.empty(0, k, dtype=torch.long)


def multiquery_ar(vocab_size: int, num_examples: int, input_seq_len: int, num_kv_pairs: int,
                  power_a: float = 0.01, random_non_queries: bool = True, seed: int = 0):
    """Draw MQAR examples; returns (inputs, labels), int64 tensors of shape (num_examples, input_seq_len).

    labels[i, t] is the value the model must predict after reading inputs[i, : t + 1] (already shifted), or -100.
    """
    check_config(vocab_size, input_seq_len, num_kv_pairs)
    if not 0 < power_a <= 1:
        raise ValueError(f"MQAR: power_a must be in (0, 1], got {power_a}")
    generator = torch.Generator().manual_seed(seed)
    n, kv = num_examples, num_kv_pairs
    key_vocab = vocab_size // 2

    # distinct keys from [1, V/2) and distinct values from [V/2, V) per example
    keys = 1 + _sample_without_replacement(torch.ones(key_vocab - 1), n, kv, generator)
    values = key_vocab + _sample_without_replacement(torch.ones(vocab_size - key_vocab), n, kv, generator)
    context = torch.stack([keys, values], dim=2).reshape(n, 2 * kv)

    # query slots: the rest of the sequence in steps of two; slot g is taken with probability ~ g^(a-1)
    slots = (input_seq_len - 2 * kv) // 2
    slot_weights = power_a * torch.arange(1, slots + 1, dtype=torch.float64) ** (power_a - 1)
    gaps = _sample_without_replacement(slot_weights.float(), n, kv, generator)

    # one extra position so the label shift below drops the last input and the first label
    queries = torch.zeros(n, input_seq_len - 2 * kv + 1, dtype=torch.long)
    queries.scatter_(1, 2 * gaps, keys)
    sequence = torch.cat([context, queries], dim=1)
    labels = torch.full((n, input_seq_len + 1), IGNORE_INDEX, dtype=torch.long)
    labels.scatter_(1, 2 * gaps + 2 * kv + 1, values)
    inputs, labels = sequence[:, :-1], labels[:, 1:]

    if random_non_queries:
        filler = inputs == 0
        inputs = inputs.masked_scatter(filler, torch.randint(vocab_size, (int(filler.sum()),), generator=generator))
    return inputs.contiguous(), labels.contiguous()


@dataclass(frozen=True)
class Segment:
    """A block of examples with one (input_seq_len, num_kv_pairs); its slice key groups test accuracy."""
    input_seq_len: int
    num_kv_pairs: int
    num_examples: int

    @property
    def slice_key(self) -> str:
        return f"L{self.input_seq_len}_kv{self.num_kv_pairs}"


def make_segments(specs) -> list[Segment]:
    """Accepts Segment objects, mappings with the three fields, or [L, kv, n] triples."""
    segments = []
    for spec in specs:
        if isinstance(spec, Segment):
            segments.append(spec)
        elif hasattr(spec, "keys"):
            segments.append(Segment(int(spec["input_seq_len"]), int(spec["num_kv_pairs"]), int(spec["num_examples"])))
        else:
            length, pairs, count = spec
            segments.append(Segment(int(length), int(pairs), int(count)))
    return segments


def generate_segments(vocab_size: int, segments: list[Segment], seed: int, power_a: float = 0.01,
                      random_non_queries: bool = True) -> list[tuple[Segment, torch.Tensor, torch.Tensor]]:
    """Each segment drawn from its own seed derived from ``seed`` and its position, so segments are independent."""
    for segment in segments:  # fail on any impossible segment before spending time on the others
        check_config(vocab_size, segment.input_seq_len, segment.num_kv_pairs)
    out = []
    for index, segment in enumerate(segments):
        inputs, labels = multiquery_ar(vocab_size, segment.num_examples, segment.input_seq_len, segment.num_kv_pairs,
                                       power_a=power_a, random_non_queries=random_non_queries,
                                       seed=seed * 1000 + index)
        out.append((segment, inputs, labels))
    return out
