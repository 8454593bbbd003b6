"""Tasks: each builds a LightningDataModule yielding batches of input_ids and labels (-100 = not scored),
plus ``slice_keys`` naming the evaluation slices (one per test dataloader) and ``describe_slices()``: one dict
per slice with at least ``slice`` and ``input_seq_len`` (the length at which the model's state size is read).
Every batch entry other than ``input_ids`` and ``labels`` is passed to the model as a keyword argument."""
from zoo.tasks.facts import FactsDataModule
from zoo.tasks.mqar_datamodule import MQARDataModule

TASKS = {"mqar": MQARDataModule, "facts": FactsDataModule}


def build_task(name: str, **options):
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name](name=name, **options)
