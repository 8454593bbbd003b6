"""Tasks: each builds a LightningDataModule yielding batches of input_ids and labels (-100 = not scored),
plus ``slice_keys`` naming the evaluation slices (one per test dataloader)."""
from zoo.tasks.mqar_datamodule import MQARDataModule

TASKS = {"mqar": MQARDataModule}


def build_task(name: str, **options):
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name](name=name, **options)
