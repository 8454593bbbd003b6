"""selective_copy: layout, determinism, read-twice, bad settings, and that it needs recall (attention solves it)."""
import pytest
import torch

from tests.tasks.recall_checks import assert_deterministic_per_seed, assert_needs_recall, assert_read_twice_layout
from zoo.tasks import build_task
from zoo.tasks.mqar import IGNORE_INDEX
from zoo.tasks.selective_copy import MARKER, NOISE, selective_copy

SMALL = dict(vocab_size=8, train_slices=[[16, 3, 4000]], test_slices=[[16, 3, 300]], batch_size=32)


def test_the_answers_are_the_data_tokens_in_order_after_the_markers():
    inputs, labels = selective_copy(16, 50, 64, 8, torch.Generator().manual_seed(0))
    assert inputs.shape == labels.shape == (50, 64)
    context, tail = inputs[:, :56], inputs[:, 56:]
    assert (tail == MARKER).all() and (labels[:, :56] == IGNORE_INDEX).all()
    for row in range(50):
        data = context[row][context[row] != NOISE]
        assert data.tolist() == labels[row, 56:].tolist()
        assert ((data >= 2) & (data < 16)).all()


def test_slices_describe_length_and_tokens():
    task = build_task("selective_copy", vocab_size=16, train_slices=[[64, 8, 10]],
                      test_slices=[{"input_seq_len": 64, "num_tokens": 8, "num_examples": 5}, [128, 16, 5]])
    assert task.slice_keys == ["L64_tok8", "L128_tok16"]
    assert task.describe_slices()[1] == {"slice": "L128_tok16", "input_seq_len": 128, "num_tokens": 16,
                                         "read_twice": "off"}
    assert task.monitor == ("val/acc", "max")


def test_deterministic_per_seed():
    assert_deterministic_per_seed("selective_copy", **{**SMALL, "train_slices": [[16, 3, 50]]})


def test_read_twice_repeats_the_context():
    assert_read_twice_layout("selective_copy", **SMALL)


@pytest.mark.parametrize("options, message", [
    (dict(vocab_size=2), "vocab_size must be at least 3"),
    (dict(test_slices=[[16, 9, 10]]), "2 \\* num_tokens <= input_seq_len"),
    (dict(test_slices=[[16, 0, 10]]), "num_tokens must be a positive integer"),
    (dict(test_slices=[[16, 3]]), "each entry of test_slices is \\[input_seq_len, num_tokens, num_examples\\]"),
    (dict(read_twice="yes"), "read_twice must be one of off, train_and_test, test_only .*got 'yes'"),
])
def test_bad_settings_fail_naming_the_value(options, message):
    with pytest.raises(ValueError, match=message):
        build_task("selective_copy", **{**SMALL, **options})


def test_attention_solves_it_and_a_context_blind_model_is_at_chance():
    assert_needs_recall(build_task("selective_copy", **SMALL), chance=1 / 6)
