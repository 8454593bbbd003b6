"""read_twice (JRT-Prompt) is one shared mechanism: the function itself, MQAR's switch, and every suite task."""
import pytest
import torch

from zoo.tasks import TASKS, build_task
from zoo.tasks.mqar import IGNORE_INDEX
from zoo.tasks.read_twice import repeat_context
from zoo.tasks.recall_suite import SUITE_TASKS


def test_repeat_context_copies_the_prefix_and_keeps_the_answers():
    inputs = torch.arange(12).view(2, 6)
    labels = torch.full((2, 6), IGNORE_INDEX)
    labels[:, 4] = 7
    x, y = repeat_context(inputs, labels, 3)
    assert x.tolist() == [[0, 1, 2, 0, 1, 2, 3, 4, 5], [6, 7, 8, 6, 7, 8, 9, 10, 11]]
    assert (y[:, 7] == 7).all() and (y != IGNORE_INDEX).sum() == 2


def test_a_context_holding_answers_cannot_be_read_twice():
    labels = torch.full((1, 4), IGNORE_INDEX)
    labels[0, 1] = 3
    with pytest.raises(ValueError, match="holds scored labels"):
        repeat_context(torch.zeros(1, 4, dtype=torch.long), labels, 2)
    with pytest.raises(ValueError, match="context_len must be in \\[1, 4\\]"):
        repeat_context(torch.zeros(1, 4, dtype=torch.long), torch.full((1, 4), IGNORE_INDEX), 5)


def test_mqar_reads_its_key_value_pairs_twice():
    options = dict(vocab_size=64, train_segments=[[16, 2, 20]], test_segments=[[16, 2, 20], [32, 4, 20]],
                   batch_size=8, seed=1)
    once, twice = build_task("mqar", **options), build_task("mqar", read_twice=True, **options)
    once.setup()
    twice.setup()
    for a, b, kv in zip(once.test_sets, twice.test_sets, (2, 4)):
        (x, y), (x2, y2) = a.parts[0], b.parts[0]
        assert torch.equal(x2[:, :2 * kv], x[:, :2 * kv]) and torch.equal(x2[:, 2 * kv:], x)
        assert torch.equal(y2[:, 2 * kv:], y) and (y2[:, :2 * kv] == IGNORE_INDEX).all()
    assert [s["input_seq_len"] for s in twice.describe_slices()] == [20, 40]
    with pytest.raises(ValueError, match="read_twice must be true or false"):
        build_task("mqar", read_twice="no", **options)


def test_every_suite_task_is_registered_and_takes_read_twice():
    assert set(SUITE_TASKS) <= set(TASKS)
    from zoo.tasks.recall_datamodule import RecallTaskDataModule
    assert all(issubclass(cls, RecallTaskDataModule) for cls in SUITE_TASKS.values())
