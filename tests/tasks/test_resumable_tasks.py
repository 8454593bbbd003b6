"""Every task resumes mid-epoch where it stopped: a DataModule given a checkpoint's state yields the rest of the
interrupted epoch's batches, exactly those an uninterrupted run would have trained on next."""
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from zoo.tasks import TASKS, build_task
from zoo.tasks.data import ResumableTrainOrder

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "task"
SMALL_FACTS = {"num_documents": 200, "probes_per_bucket": 8}


def small_task(name: str):
    """The task's shipped config with a few hundred training rows (enough for several batches; text: the default
    corpus, small batches)."""
    options = OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{name}.yaml"))
    options.pop("name")
    if name == "facts":
        options.update(SMALL_FACTS)
    for key in ("train_slices", "test_slices", "train_segments", "test_segments"):
        if key in options:  # every slice's last field is its number of examples
            options[key] = [[*spec[:-1], 96] for spec in options[key]]
    options["batch_size"] = 16
    return build_task(name, **options)


def train_batches(task) -> list[torch.Tensor]:
    return [batch["input_ids"] for batch in task.train_dataloader()]


def test_every_registered_task_keeps_its_place_in_the_train_order():
    assert [name for name, cls in TASKS.items() if not issubclass(cls, ResumableTrainOrder)] == []


@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_resumed_task_yields_the_rest_of_the_interrupted_epoch(name):
    uninterrupted = small_task(name)
    uninterrupted.setup("fit")
    loader = uninterrupted.train_dataloader()
    first_epoch = [batch["input_ids"] for batch in loader]
    second_epoch = [batch["input_ids"] for batch in loader]
    assert len(second_epoch) > 3, "too few batches to resume inside the epoch"

    resumed = small_task(name)
    resumed.load_state_dict({"epoch": 1, "batches_done": 3})
    resumed.setup("fit")
    rest = train_batches(resumed)
    assert len(rest) == len(second_epoch) - 3
    for got, expected in zip(rest, second_epoch[3:]):
        assert torch.equal(got, expected)
    # the epochs differ, so the comparison above could tell a restarted epoch from a resumed one
    assert not all(torch.equal(a, b) for a, b in zip(first_epoch[3:], rest))
