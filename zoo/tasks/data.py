"""Datasets for recall tasks: every batch comes from one segment (one length), so no padding is needed."""
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

# the label of a position that is not scored (torch's cross-entropy ignore_index): every task's labels use it
IGNORE_INDEX = -100


class SegmentedDataset(Dataset):
    """Concatenation of segments, each a pair of (inputs, labels) tensors of one sequence length, optionally with
    a third item: a dict of more per-row tensors (e.g. ``seq_idx``), which every batch then carries too."""

    def __init__(self, parts: list[tuple]):
        self.parts = [(part[0], part[1]) for part in parts]
        self.extras = [part[2] if len(part) == 3 else {} for part in parts]
        self.offsets = [0]
        for inputs, *_ in parts:
            self.offsets.append(self.offsets[-1] + len(inputs))

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, index: int) -> dict:
        part = next(i for i in range(len(self.parts)) if index < self.offsets[i + 1])
        (inputs, labels), extras = self.parts[part], self.extras[part]
        row = index - self.offsets[part]
        return {"input_ids": inputs[row], "labels": labels[row], **{k: v[row] for k, v in extras.items()}}

    def __getitems__(self, indices: list[int]) -> dict:
        """Batched fetch (DataLoader uses it when present): one gather per batch instead of per example."""
        part = next(i for i in range(len(self.parts)) if indices[0] < self.offsets[i + 1])
        rows = torch.as_tensor(indices) - self.offsets[part]
        (inputs, labels), extras = self.parts[part], self.extras[part]
        return {"input_ids": inputs[rows], "labels": labels[rows], **{k: v[rows] for k, v in extras.items()}}


def process_rank() -> tuple[int, int]:
    """(rank, number of processes) of this process in torch.distributed's default group; (0, 1) outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class SegmentBatchSampler(Sampler[list[int]]):
    """Shuffled batches that never mix segments; reshuffled each epoch from a seeded generator (seed + epoch), so
    an epoch's order is known in advance and a resumed run can start mid-epoch (``resume``).

    Several processes (DDP; ``rank`` and ``num_replicas`` default to torch.distributed's) share the work so that a
    run's numbers do not depend on their count:
    - training (``shuffle=True``): every process draws the same epoch of batches and takes every
      ``num_replicas``-th one, from its rank on; the epoch's first batches are repeated at its end as needed so
      that every process takes the same number of steps (DDP steps them together), as torch's DistributedSampler
      pads;
    - evaluation (``shuffle=False``): each process takes every ``num_replicas``-th example of each segment, from
      its rank on, with nothing repeated or dropped: metrics summed over the processes (LitLM's) are those of
      one process over the whole split.
    """

    def __init__(self, offsets: list[int], batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False,
                 num_replicas: int | None = None, rank: int | None = None):
        self.offsets, self.batch_size, self.shuffle, self.seed, self.drop_last = offsets, batch_size, shuffle, seed, drop_last
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self.start = 0  # batches of self.epoch already trained on by this process (a resumed run skips them)

    def resume(self, epoch: int, batches_done: int):
        """The next iteration yields epoch ``epoch`` from its batch ``batches_done`` on (the next epoch if done)."""
        if batches_done >= len(self):
            epoch, batches_done = epoch + 1, 0
        self.epoch, self.start = epoch, batches_done

    def _process(self) -> tuple[int, int]:
        rank, replicas = process_rank()
        return (rank if self.rank is None else self.rank,
                replicas if self.num_replicas is None else self.num_replicas)

    def _batches(self) -> list[list[int]]:
        """This process's batches of the current epoch."""
        rank, replicas = self._process()
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        batches = []
        for start, stop in zip(self.offsets[:-1], self.offsets[1:]):
            order = torch.randperm(stop - start, generator=generator) if self.shuffle else torch.arange(stop - start)
            if not self.shuffle:
                order = order[rank::replicas]  # evaluation: each example on one process
            for i in range(0, len(order), self.batch_size):
                chunk = order[i:i + self.batch_size]
                if self.drop_last and len(chunk) < self.batch_size:
                    continue
                batches.append((chunk + start).tolist())
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
            if replicas > 1 and batches:  # training: the same number of steps on every process
                per_process = -(-len(batches) // replicas)
                batches = (batches * replicas)[:per_process * replicas][rank::replicas]
        return batches

    def __iter__(self):
        batches = self._batches()[self.start:]
        self.epoch, self.start = self.epoch + 1, 0
        return iter(batches)

    def __len__(self) -> int:
        rank, replicas = self._process()
        sizes = [stop - start for start, stop in zip(self.offsets[:-1], self.offsets[1:])]
        if not self.shuffle:  # this process's share of each segment's examples
            sizes = [len(range(rank, size, replicas)) for size in sizes]
        if self.drop_last:
            batches = sum(size // self.batch_size for size in sizes)
        else:
            batches = sum(-(-size // self.batch_size) for size in sizes)
        return -(-batches // replicas) if self.shuffle else batches


def collate_batch(batch: dict) -> dict:
    """__getitems__ already returns a stacked batch, so collation has nothing left to do."""
    return batch


class ResumableTrainOrder:
    """Mixin for a task LightningDataModule whose train loader uses a SegmentBatchSampler made by
    ``train_sampler``: checkpoints record the epoch and the batches already trained in it (Lightning saves a
    DataModule's ``state_dict``), and a resumed run's sampler starts there: no batch is lost or repeated."""

    _resume_at = (0, 0)

    def state_dict(self) -> dict:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return {}
        # batches whose optimizer step is done in the current epoch (all of them when saved at its end)
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"epoch": trainer.current_epoch, "batches_done": done}

    def load_state_dict(self, state: dict):
        if state:
            self._resume_at = (state["epoch"], state["batches_done"])

    def train_sampler(self, offsets: list[int], batch_size: int, seed: int) -> SegmentBatchSampler:
        sampler = SegmentBatchSampler(offsets, batch_size, shuffle=True, seed=seed)
        sampler.resume(*self._resume_at)
        return sampler
