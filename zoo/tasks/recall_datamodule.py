"""The DataModule every recall task of the suite shares: slices, seeded splits, read-twice, loaders.

A task subclass declares its slice type (a frozen dataclass whose last field is ``num_examples``, with a
``slice_key`` property) and implements ``check`` (ValueError naming the bad value), ``lengths`` (sequence and
context length of a slice) and ``draw`` (inputs and labels of a slice from a torch.Generator).

Splits: train, validation and test are drawn from their own seeds (3*seed, 3*seed+1, 3*seed+2); validation and
test hold the same slices (``test_slices``), so choices made on validation are scored once on test. Each slice
is drawn from a seed derived from its split's and its position, so slices are independent of one another.
"""
import dataclasses

import lightning as L
from torch.utils.data import DataLoader
import torch

from zoo.checks import require_positive_int
from zoo.tasks.data import ResumableTrainOrder, SegmentBatchSampler, SegmentedDataset, collate_batch
from zoo.tasks.read_twice import OFF, read_twice_setting, reads_twice, repeat_context

TRAIN, VALIDATION, TEST = "train", "validation", "test"
_SPLIT_OFFSET = {TRAIN: 0, VALIDATION: 1, TEST: 2}


def parse_slices(slice_type, specs, task: str, which: str) -> list:
    """Slice objects from dataclass instances, mappings of the fields, or lists in field order."""
    names = [f.name for f in dataclasses.fields(slice_type)]
    slices = []
    for spec in specs or ():
        if isinstance(spec, slice_type):
            slices.append(spec)
            continue
        if hasattr(spec, "keys"):
            unknown = sorted(set(spec) - set(names))
            if unknown:
                raise ValueError(f"{task}: unknown field(s) {', '.join(unknown)} in {which}; fields: {', '.join(names)}")
            values = dict(spec)
        else:
            values = list(spec)
            if len(values) != len(names):
                raise ValueError(f"{task}: each entry of {which} is [{', '.join(names)}], got {values!r}")
            values = dict(zip(names, values))
        missing = [n for n in names if n not in values]
        if missing:
            raise ValueError(f"{task}: {which} entry {spec!r} lacks {', '.join(missing)}")
        for name in names:
            require_positive_int(f"{which} {name}", values[name], task)
        slices.append(slice_type(**values))
    if not slices:
        raise ValueError(f"{task}: {which} must hold at least one [{', '.join(names)}] entry")
    return slices


class RecallTaskDataModule(ResumableTrainOrder, L.LightningDataModule):
    """Base of the recall-suite tasks (see the module docstring); ``monitor`` is what checkpointing watches."""

    slice_type = None
    monitor = ("val/acc", "max")

    def __init__(self, vocab_size: int, train_slices, test_slices, batch_size: int = 64, seed: int = 0,
                 read_twice: str | bool = OFF, num_workers: int = 0, name: str | None = None):
        super().__init__()
        self.name = name or self.task_name
        require_positive_int("vocab_size", vocab_size, self.name)
        require_positive_int("batch_size", batch_size, self.name)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"{self.name}: seed must be an integer >= 0, got {seed!r}")
        self.vocab_size, self.batch_size, self.seed = vocab_size, batch_size, seed
        self.read_twice = read_twice_setting(read_twice, self.name)  # which splits: zoo/tasks/read_twice.py
        self.num_workers = num_workers
        self.train_slices = parse_slices(self.slice_type, train_slices, self.name, "train_slices")
        self.test_slices = parse_slices(self.slice_type, test_slices, self.name, "test_slices")
        for spec in self.train_slices + self.test_slices:  # fail at once, before any model is built
            self.check(spec)
        keys = [spec.slice_key for spec in self.test_slices]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{self.name}: test_slices must differ in their settings, got the slices {keys}")
        self.train_set = None
        self.eval_sets: dict[str, list[SegmentedDataset]] = {}

    # ---- what a task implements ----------------------------------------------------------------------------
    task_name = "recall task"

    def check(self, spec):
        """Raise ValueError naming the value that makes ``spec`` impossible at this vocabulary."""

    def lengths(self, spec) -> tuple[int, int]:
        """(sequence length, context length) of one example of ``spec``, before read-twice."""
        raise NotImplementedError

    def draw(self, spec, num_examples: int, generator: torch.Generator):
        """(inputs, labels), int64 of shape (num_examples, sequence length); labels -100 off the answers."""
        raise NotImplementedError

    def columns(self, spec) -> dict:
        """The task's columns of a slice's row in result tables."""
        return {}

    # ---- shared ----------------------------------------------------------------------------------------------
    def input_seq_len(self, spec, split: str = TEST) -> int:
        """A slice's length as fed in ``split`` (read-twice included)."""
        length, context = self.lengths(spec)
        return length + context if reads_twice(self.read_twice, split) else length

    @property
    def slice_keys(self) -> list[str]:
        return [spec.slice_key for spec in self.test_slices]

    def describe_slices(self) -> list[dict]:
        """One dict per evaluation slice (slice_keys order): key, input_seq_len (as fed, read-twice included)."""
        return [{"slice": s.slice_key, "input_seq_len": self.input_seq_len(s), **self.columns(s),
                 "read_twice": self.read_twice} for s in self.test_slices]

    def generate(self, split: str) -> list[tuple]:
        """Every slice of a split as (spec, inputs, labels); deterministic per (seed, split, slice position)."""
        specs = self.train_slices if split == TRAIN else self.test_slices
        out = []
        for index, spec in enumerate(specs):
            generator = torch.Generator().manual_seed((3 * self.seed + _SPLIT_OFFSET[split]) * 1000 + index)
            inputs, labels = self.draw(spec, spec.num_examples, generator)
            if reads_twice(self.read_twice, split):
                inputs, labels = repeat_context(inputs, labels, self.lengths(spec)[1])
            out.append((spec, inputs, labels))
        return out

    def setup(self, stage: str | None = None):
        if self.train_set is None and stage in (None, "fit"):
            self.train_set = SegmentedDataset([(x, y) for _, x, y in self.generate(TRAIN)])
        for split in (VALIDATION, TEST):
            if split not in self.eval_sets:
                self.eval_sets[split] = [SegmentedDataset([(x, y)]) for _, x, y in self.generate(split)]

    def train_dataloader(self):
        sampler = self.train_sampler(self.train_set.offsets, self.batch_size, self.seed)
        return DataLoader(self.train_set, batch_sampler=sampler, collate_fn=collate_batch, num_workers=self.num_workers)

    def _loaders(self, split: str):
        return [DataLoader(data, batch_sampler=SegmentBatchSampler(data.offsets, self.batch_size, shuffle=False),
                           collate_fn=collate_batch, num_workers=self.num_workers) for data in self.eval_sets[split]]

    def val_dataloader(self):
        return self._loaders(VALIDATION)

    def test_dataloader(self):
        return self._loaders(TEST)
