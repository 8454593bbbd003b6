import pytest
import torch

from tests.tasks.recall_checks import check_structure
from zoo.tasks import build_task


def small_task(**overrides):
    options = dict(vocab_size=128, train_segments=[[32, 4, 100], [64, 8, 50]],
                   test_segments=[[32, 4, 40], [64, 16, 30]], batch_size=16, seed=3)
    options.update(overrides)
    return build_task("mqar", **options)


def test_batches_never_mix_segments_and_cover_every_example():
    task = small_task()
    task.setup()
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


def test_train_validation_and_test_are_drawn_from_different_seeds():
    task = small_task(train_segments=[[32, 4, 40]], test_segments=[[32, 4, 40]])
    task.setup()
    train = task.train_set.parts[0][0]
    validation = task.val_sets[0].parts[0][0]
    test = task.test_sets[0].parts[0][0]
    assert not torch.equal(train, test) and not torch.equal(validation, test) and not torch.equal(train, validation)
    again = small_task(train_segments=[[32, 4, 40]], test_segments=[[32, 4, 40]])
    again.setup()
    assert torch.equal(again.train_set.parts[0][0], train), "same seed, same data"
    assert torch.equal(again.val_sets[0].parts[0][0], validation)


def test_validation_has_the_test_slices_and_its_loaders_are_not_the_test_loaders():
    task = small_task()
    task.setup()
    val_batches = [next(iter(loader)) for loader in task.val_dataloader()]
    test_batches = [next(iter(loader)) for loader in task.test_dataloader()]
    assert [b["input_ids"].shape for b in val_batches] == [b["input_ids"].shape for b in test_batches]
    assert sum(len(loader.dataset) for loader in task.val_dataloader()) == 40 + 30
    assert not any(torch.equal(v["input_ids"], t["input_ids"]) for v, t in zip(val_batches, test_batches))
    check_structure(val_batches[1]["input_ids"], val_batches[1]["labels"], 128, 16)
    assert task.monitor == ("val/acc", "max")


def test_resumed_sampler_yields_the_rest_of_the_interrupted_epoch_then_the_next():
    task = small_task()
    task.setup("fit")
    fresh = task.train_dataloader().batch_sampler
    epoch0, epoch1 = list(fresh), list(fresh)
    assert epoch0 != epoch1, "reshuffled each epoch"
    task.load_state_dict({"epoch": 0, "batches_done": 3})  # what a checkpoint 3 steps into epoch 0 holds
    resumed = task.train_dataloader().batch_sampler
    assert list(resumed) == epoch0[3:] and list(resumed) == epoch1
    task.load_state_dict({"epoch": 0, "batches_done": len(epoch0)})  # saved at the end of epoch 0
    assert list(task.train_dataloader().batch_sampler) == epoch1


def test_impossible_segment_fails_at_construction():
    with pytest.raises(ValueError, match="4 \\* num_kv_pairs"):
        small_task(test_segments=[[32, 9, 10]])


def test_unknown_task_lists_known_ones():
    with pytest.raises(ValueError, match="known tasks: .*mqar"):
        build_task("copying", vocab_size=10)


def test_unknown_task_setting_lists_the_accepted_ones():
    with pytest.raises(ValueError, match="task 'mqar': unknown setting 'batchsize'; accepted: vocab_size, .*batch_size"):
        small_task(batchsize=3)
