"""MQAR as a LightningDataModule: train segments for fitting; validation and test drawn separately (their own
seeds) with the same slices: validation chooses (checkpoints, early stopping, learning rates), test reports."""
import lightning as L
from torch.utils.data import DataLoader

from zoo.tasks.data import ResumableTrainOrder, SegmentBatchSampler, SegmentedDataset, collate_batch
from zoo.tasks.mqar import Segment, check_config, generate_segments, make_segments
from zoo.tasks.read_twice import OFF, read_twice_setting, reads_twice, repeat_context


VALIDATION_SEED_OFFSET = 1_000_000  # validation draws from 1e6 + 2*seed + 1: apart from every train and test seed


def split_seeds(seed: int) -> dict[str, int]:
    """The data seed of each split (each segment then draws from its own seed derived from it)."""
    return {"train": 2 * seed, "test": 2 * seed + 1, "validation": VALIDATION_SEED_OFFSET + 2 * seed + 1}


class MQARDataModule(ResumableTrainOrder, L.LightningDataModule):
    """Train, validation and test sets come from disjoint seeds (``split_seeds``); validation has the test
    segments' slices and sizes. val_dataloader is validation, test_dataloader is test."""

    monitor = ("val/acc", "max")  # the validation metric that picks the best checkpoint

    def __init__(self, vocab_size: int, train_segments, test_segments, batch_size: int = 64, seed: int = 0,
                 power_a: float = 0.01, random_non_queries: bool = True, num_workers: int = 0, name: str = "mqar",
                 read_twice: str | bool = OFF):
        super().__init__()
        # JRT-Prompt: the key-value pairs read twice before the queries (zoo/tasks/read_twice.py: which splits)
        self.read_twice = read_twice_setting(read_twice, "MQAR")
        self.vocab_size, self.batch_size, self.seed = vocab_size, batch_size, seed
        self.power_a, self.random_non_queries, self.num_workers = power_a, random_non_queries, num_workers
        self.train_segments: list[Segment] = make_segments(train_segments)
        self.test_segments: list[Segment] = make_segments(test_segments)
        if not self.train_segments or not self.test_segments:
            raise ValueError("MQAR: train_segments and test_segments must each hold at least one [L, kv, n] entry")
        for segment in self.train_segments + self.test_segments:  # fail at once, before any model is built
            check_config(vocab_size, segment.input_seq_len, segment.num_kv_pairs)
        self.train_set = None
        self.val_sets = None
        self.test_sets = None

    @property
    def slice_keys(self) -> list[str]:
        return [segment.slice_key for segment in self.test_segments]

    def describe_slices(self) -> list[dict]:
        """One dict per evaluation slice (in slice_keys order): its key, its input_seq_len, and task columns."""
        # evaluation slices: read twice in train_and_test and test_only, the 2 * num_kv_pairs context tokens twice
        extra = 2 * reads_twice(self.read_twice, "test")
        return [{"slice": s.slice_key, "input_seq_len": s.input_seq_len + extra * s.num_kv_pairs,
                 "num_kv_pairs": s.num_kv_pairs, "read_twice": self.read_twice} for s in self.test_segments]

    def _draw(self, segments: list[Segment], split: str):
        """(inputs, labels) of each segment of a split, read twice where the setting says so for that split."""
        drawn = generate_segments(self.vocab_size, segments, split_seeds(self.seed)[split], self.power_a,
                                  self.random_non_queries)
        if not reads_twice(self.read_twice, split):
            return [(inputs, labels) for _, inputs, labels in drawn]
        return [repeat_context(inputs, labels, 2 * segment.num_kv_pairs) for segment, inputs, labels in drawn]

    def setup(self, stage: str | None = None):
        if self.train_set is None and stage in (None, "fit"):
            self.train_set = SegmentedDataset(self._draw(self.train_segments, "train"))
        if self.val_sets is None and stage in (None, "fit", "validate"):
            self.val_sets = [SegmentedDataset([drawn]) for drawn in self._draw(self.test_segments, "validation")]
        if self.test_sets is None and stage in (None, "test"):
            self.test_sets = [SegmentedDataset([drawn]) for drawn in self._draw(self.test_segments, "test")]

    def train_dataloader(self):
        sampler = self.train_sampler(self.train_set.offsets, self.batch_size, seed=self.seed)
        return DataLoader(self.train_set, batch_sampler=sampler, collate_fn=collate_batch, num_workers=self.num_workers)

    def _eval_loaders(self, sets: list[SegmentedDataset]):
        return [DataLoader(data, batch_sampler=SegmentBatchSampler(data.offsets, self.batch_size, shuffle=False),
                           collate_fn=collate_batch, num_workers=self.num_workers) for data in sets]

    def val_dataloader(self):
        return self._eval_loaders(self.val_sets)

    def test_dataloader(self):
        return self._eval_loaders(self.test_sets)
