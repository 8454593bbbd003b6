import pytest
import torch

from tests.tasks.test_mqar import check_structure
from zoo.tasks import build_task


def small_task(**overrides):
    options = dict(vocab_size=128, train_segments=[[32, 4, 100], [64, 8, 50]],
                   test_segments=[[32, 4, 40], [64, 16, 30]], batch_size=16, seed=3)
    options.update(overrides)
    return build_task("mqar", **options)


def test_batches_never_mix_segments_and_cover_every_example():
    task = small_task()
    task.setup("fit")
    seen = 0
    for batch in task.train_dataloader():
        assert batch["input_ids"].shape == batch["labels"].shape
        assert batch["input_ids"].shape[1] in (32, 64)
        seen += batch["input_ids"].shape[0]
    assert seen == 150
    lengths = [next(iter(loader))["input_ids"].shape[1] for loader in task.test_dataloader()]
    assert lengths == [32, 64]
    assert task.slice_keys == ["L32_kv4", "L64_kv16"]


def test_test_batches_have_mqar_structure():
    task = small_task()
    task.setup("test")
    batch = next(iter(task.test_dataloader()[1]))
    check_structure(batch["input_ids"], batch["labels"], 128, 16)


def test_train_and_test_are_drawn_from_different_seeds():
    task = small_task(train_segments=[[32, 4, 40]], test_segments=[[32, 4, 40]])
    task.setup("fit")
    train = task.train_set.parts[0][0]
    test = task.test_sets[0].parts[0][0]
    assert not torch.equal(train, test)
    again = small_task(train_segments=[[32, 4, 40]], test_segments=[[32, 4, 40]])
    again.setup("fit")
    assert torch.equal(again.train_set.parts[0][0], train), "same seed, same data"


def test_impossible_segment_fails_at_construction():
    with pytest.raises(ValueError, match="4 \\* num_kv_pairs"):
        small_task(test_segments=[[32, 9, 10]])


def test_unknown_task_lists_known_ones():
    with pytest.raises(ValueError, match="known tasks: mqar"):
        build_task("copying", vocab_size=10)
