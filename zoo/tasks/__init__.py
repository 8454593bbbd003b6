"""Tasks: each builds a LightningDataModule yielding batches of input_ids and labels (-100 = not scored),
plus ``slice_keys`` naming the evaluation slices (one per test dataloader) and ``describe_slices()``: one dict
per slice with at least ``slice`` and ``input_seq_len`` (the length at which the model's state size is read).
Every batch entry other than ``input_ids`` and ``labels`` is passed to the model as a keyword argument.

Splits (every task): train, validation and test. Validation is drawn separately from test (its own seed, or its
own held-out part of a corpus) with the same slices, so ``val_dataloader()`` returns one loader per slice
exactly as ``test_dataloader()`` does. ``val_dataloader`` is validation and ``test_dataloader`` is test: every
choice (best checkpoint, early stopping, the recall bench's learning rate) reads validation only, and the test
split is evaluated once, at the end. ``setup(stage)`` builds what the stage needs ("fit": train + validation,
"validate": validation, "test": test, None: all).

``monitor = ("val/acc", "max")``: class attribute naming the task's main validation metric (logged by LitLM)
and whether higher or lower is better; the best checkpoint and early stopping follow it (a text task would
say ``("val/bpb", "min")``). Default when absent: ``("val/acc", "max")``.

Resuming mid-epoch without lost or repeated batches: inherit ``zoo.tasks.data.ResumableTrainOrder`` and build
the train loader's batch sampler with its ``train_sampler(...)``: every built-in task does
(tests/tasks/test_resumable_tasks.py); a task without it restarts the interrupted epoch from its first batch."""
from zoo.checks import require_known_keywords
from zoo.tasks.facts import FactsDataModule
from zoo.tasks.mqar_datamodule import MQARDataModule
from zoo.tasks.recall_suite import SUITE_TASKS
from zoo.tasks.text import TextDataModule

TASKS = {"mqar": MQARDataModule, "text": TextDataModule, "facts": FactsDataModule, **SUITE_TASKS}


def build_task(name: str, **options):
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    require_known_keywords(TASKS[name], options, f"task {name!r}", skip=("name",))
    return TASKS[name](name=name, **options)
