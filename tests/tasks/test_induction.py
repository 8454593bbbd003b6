"""induction: layout, length extrapolation slices, determinism, read-twice, bad settings, needs recall."""
import pytest
import torch

from tests.tasks.recall_checks import assert_deterministic_per_seed, assert_needs_recall, assert_read_twice_layout
from zoo.tasks import build_task
from zoo.tasks.induction import TRIGGER, induction
from zoo.tasks.mqar import IGNORE_INDEX

SMALL = dict(vocab_size=16, train_slices=[[24, 4000]], test_slices=[[24, 300], [48, 300]], batch_size=32)


def test_the_answer_follows_the_only_earlier_trigger():
    inputs, labels = induction(16, 100, 32, torch.Generator().manual_seed(0))
    assert (inputs[:, -1] == TRIGGER).all() and (labels[:, :-1] == IGNORE_INDEX).all()
    for row in range(100):
        earlier = (inputs[row, :-1] == TRIGGER).nonzero().flatten()
        assert len(earlier) == 1
        assert inputs[row, earlier[0] + 1] == labels[row, -1]


def test_slices_are_lengths():
    task = build_task("induction", **SMALL)
    assert task.slice_keys == ["L24", "L48"]
    assert [s["input_seq_len"] for s in task.describe_slices()] == [24, 48]


def test_deterministic_per_seed():
    assert_deterministic_per_seed("induction", **{**SMALL, "train_slices": [[24, 50]]})


def test_read_twice_repeats_the_context():
    assert_read_twice_layout("induction", **SMALL)


@pytest.mark.parametrize("options, message", [
    (dict(vocab_size=2), "vocab_size must be at least 3"),
    (dict(test_slices=[[3, 10]]), "input_seq_len must be at least 4"),
    (dict(test_slices=[[24, 10], [24, 5]]), "test_slices must differ"),
])
def test_bad_settings_fail_naming_the_value(options, message):
    with pytest.raises(ValueError, match=message):
        build_task("induction", **{**SMALL, **options})


def test_attention_solves_it_also_at_twice_the_length_and_a_context_blind_model_is_at_chance():
    assert_needs_recall(build_task("induction", **SMALL), chance=1 / 15)
