"""MQAR structure, checked from the outputs alone (not from how the generator builds them)."""
import pytest
import torch

from tests.tasks.recall_checks import check_structure
from zoo.tasks.mqar import IGNORE_INDEX, multiquery_ar

VOCAB, LENGTH, PAIRS = 256, 64, 8


def test_zoology_structure():
    inputs, labels = multiquery_ar(VOCAB, 50, LENGTH, PAIRS, seed=3)
    assert inputs.shape == labels.shape == (50, LENGTH)
    assert inputs.dtype == labels.dtype == torch.int64
    assert inputs.min() >= 0 and inputs.max() < VOCAB
    check_structure(inputs, labels, VOCAB, PAIRS)


def test_structure_at_the_tightest_config():
    inputs, labels = multiquery_ar(17, 20, 16, 4, seed=0)  # 4 * pairs == length, vocab just above length
    check_structure(inputs, labels, 17, 4)


def test_filler_is_random_or_zero():
    with_noise, _ = multiquery_ar(VOCAB, 200, LENGTH, PAIRS, seed=1)
    without, labels = multiquery_ar(VOCAB, 200, LENGTH, PAIRS, seed=1, random_non_queries=False)
    filler = (labels == IGNORE_INDEX)
    filler[:, : 2 * PAIRS] = False
    filler &= without == 0
    assert (without[filler] == 0).all()
    assert (with_noise[filler] != 0).float().mean() > 0.9, "random_non_queries fills the gaps with tokens"


def test_deterministic_from_seed_and_no_global_rng():
    torch.manual_seed(123)
    a = multiquery_ar(VOCAB, 30, LENGTH, PAIRS, seed=7)
    state = torch.random.get_rng_state()
    torch.manual_seed(999)
    b = multiquery_ar(VOCAB, 30, LENGTH, PAIRS, seed=7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    torch.manual_seed(123)
    multiquery_ar(VOCAB, 30, LENGTH, PAIRS, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state), "the global RNG is left untouched"
    c = multiquery_ar(VOCAB, 30, LENGTH, PAIRS, seed=8)
    assert not torch.equal(a[0], c[0])


def test_query_gaps_follow_a_power_law():
    """Short gaps are far more likely than long ones (a=0.01: p(g) ~ g^-0.99)."""
    _, labels = multiquery_ar(1024, 2000, 512, 4, seed=0)
    query_slots = ((labels != IGNORE_INDEX).nonzero()[:, 1] - 2 * 4) // 2
    slots = (512 - 8) // 2
    first_tenth = (query_slots < slots // 10).float().mean().item()
    assert first_tenth > 0.35, f"only {first_tenth:.2f} of queries in the first tenth of the gaps (uniform: 0.10)"
    assert query_slots.max() > slots // 2, "long gaps still occur"


@pytest.mark.parametrize("args, constraint", [
    ((256, 10, 63, 4), "even"),
    ((64, 10, 64, 4), "vocab_size must be larger than input_seq_len"),
    ((256, 10, 64, 17), r"4 \* num_kv_pairs <= input_seq_len"),
    ((256, 10, 64, 0), "num_kv_pairs must be a positive integer"),
])
def test_impossible_config_names_the_constraint(args, constraint):
    with pytest.raises(ValueError, match=constraint):
        multiquery_ar(*args)
