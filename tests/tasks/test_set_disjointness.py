"""set_disjointness (JRT): layout, order slices, determinism, read-twice, bad settings, needs recall."""
import pytest
import torch

from tests.tasks.recall_checks import assert_deterministic_per_seed, assert_needs_recall, assert_read_twice_layout
from zoo.tasks import build_task
from zoo.tasks.mqar import IGNORE_INDEX
from zoo.tasks.set_disjointness import SEP, set_disjointness

SMALL = dict(vocab_size=32, train_slices=[[4, 8, 4000], [8, 4, 4000]], test_slices=[[4, 8, 300], [8, 4, 300]],
             batch_size=32)


def test_the_sets_share_exactly_the_labelled_element():
    inputs, labels = set_disjointness(64, 100, 3, 7, torch.Generator().manual_seed(0))
    assert inputs.shape == (100, 12) and (inputs[:, 3] == SEP).all() and (inputs[:, -1] == SEP).all()
    assert (labels[:, :-1] == IGNORE_INDEX).all()
    for row in range(100):
        a, b = set(inputs[row, :3].tolist()), set(inputs[row, 4:11].tolist())
        assert len(a) == 3 and len(b) == 7 and SEP not in a | b
        assert a & b == {labels[row, -1].item()}


def test_both_orders_are_slices():
    rows = build_task("set_disjointness", **SMALL).describe_slices()
    assert [(r["slice"], r["order"], r["input_seq_len"]) for r in rows] == [
        ("A4_B8", "short_first", 14), ("A8_B4", "long_first", 14)]


def test_deterministic_per_seed_and_read_twice():
    assert_deterministic_per_seed("set_disjointness", **{**SMALL, "train_slices": [[4, 8, 50]]})
    assert_read_twice_layout("set_disjointness", **SMALL)


@pytest.mark.parametrize("options, message", [
    (dict(vocab_size=10), "size_a \\+ size_b - 1 = 11 distinct elements, more than vocab_size - 1 = 9"),
    (dict(test_slices=[[0, 4, 10]]), "size_a must be a positive integer"),
    (dict(test_slices=[{"size_a": 2, "size_c": 3, "num_examples": 4}]), "unknown field"),
])
def test_bad_settings_fail_naming_the_value(options, message):
    with pytest.raises(ValueError, match=message):
        build_task("set_disjointness", **{**SMALL, **options})


def test_attention_solves_both_orders_and_a_context_blind_model_is_at_chance():
    assert_needs_recall(build_task("set_disjointness", **SMALL), chance=1 / 31,
                        layers=[{"name": "attention"}], steps=1200)
