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


MQAR_OPTIONS = dict(vocab_size=64, train_segments=[[16, 2, 20]], test_segments=[[16, 2, 20], [32, 4, 20]],
                    batch_size=8, seed=1)


def splits(task):
    """(train parts, validation parts, test parts) of a set-up MQAR DataModule, each a list of (inputs, labels)."""
    task.setup()
    return task.train_set.parts, [d.parts[0] for d in task.val_sets], [d.parts[0] for d in task.test_sets]


def assert_doubled(once, twice, pairs):
    for (x, y), (x2, y2), kv in zip(once, twice, pairs):
        assert torch.equal(x2[:, :2 * kv], x[:, :2 * kv]) and torch.equal(x2[:, 2 * kv:], x)
        assert torch.equal(y2[:, 2 * kv:], y) and (y2[:, :2 * kv] == IGNORE_INDEX).all()


def assert_same(a, b):
    assert len(a) == len(b) and all(torch.equal(x, x2) and torch.equal(y, y2) for (x, y), (x2, y2) in zip(a, b))


def test_mqar_reads_its_key_value_pairs_twice():
    once, twice = splits(build_task("mqar", **MQAR_OPTIONS)), splits(build_task("mqar", read_twice="train_and_test",
                                                                              **MQAR_OPTIONS))
    for split_once, split_twice, pairs in zip(once, twice, ([2], [2, 4], [2, 4])):
        assert_doubled(split_once, split_twice, pairs)
    describe = build_task("mqar", read_twice="train_and_test", **MQAR_OPTIONS).describe_slices()
    assert [s["input_seq_len"] for s in describe] == [20, 40]


def test_mqar_test_only_reads_once_in_training_and_twice_in_validation_and_test():
    once = splits(build_task("mqar", read_twice="off", **MQAR_OPTIONS))
    twice = splits(build_task("mqar", read_twice="train_and_test", **MQAR_OPTIONS))
    task = build_task("mqar", read_twice="test_only", **MQAR_OPTIONS)
    train, validation, test = splits(task)
    assert_same(train, once[0])
    assert_same(validation, twice[1])
    assert_doubled(once[1], validation, [2, 4])
    assert_same(test, twice[2])
    assert [(s["input_seq_len"], s["read_twice"]) for s in task.describe_slices()] == [(20, "test_only"),
                                                                                      (40, "test_only")]


@pytest.mark.parametrize("alias, setting", [(False, "off"), (True, "train_and_test")])
def test_the_old_booleans_are_aliases(alias, setting):
    task, named = build_task("mqar", read_twice=alias, **MQAR_OPTIONS), build_task("mqar", read_twice=setting,
                                                                                  **MQAR_OPTIONS)
    assert task.read_twice == setting
    for a, b in zip(splits(task), splits(named)):
        assert_same(a, b)


@pytest.mark.parametrize("value", ["no", "on", "both", "test", 1, None])
def test_any_other_value_fails_in_one_line_naming_it_and_the_settings(value):
    for name, options in (("mqar", MQAR_OPTIONS), ("induction", dict(vocab_size=8, train_slices=[[12, 4]],
                                                                      test_slices=[[12, 4]]))):
        with pytest.raises(ValueError) as error:
            build_task(name, read_twice=value, **options)
        message = str(error.value)
        assert "\n" not in message and repr(value) in message
        assert "off, train_and_test, test_only" in message


def test_a_model_without_positional_limits_scores_the_longer_test_only_rows():
    """test_only evaluates on rows longer than any trained on: the trunk (no learned positions; attention's rotary
    tables are made per length) takes them."""
    from zoo.model import LM
    task = build_task("mqar", read_twice="test_only", **MQAR_OPTIONS)
    train, _, test = splits(task)
    model = LM(vocab_size=64, d_model=16, n_layers=2, layers=[{"name": "short_conv"}, {"name": "attention"}])
    longest = max(x.shape[1] for x, _ in test)
    assert longest > max(x.shape[1] for x, _ in train)
    assert model(test[-1][0][:2]).shape == (2, longest, 64)


def test_every_suite_task_is_registered_and_takes_read_twice():
    assert set(SUITE_TASKS) <= set(TASKS)
    from zoo.tasks.recall_datamodule import RecallTaskDataModule
    assert all(issubclass(cls, RecallTaskDataModule) for cls in SUITE_TASKS.values())
