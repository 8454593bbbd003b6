"""SIGTERM / SIGINT during training: finish the current step, save a checkpoint, and stop with an error that
says where it is, so a sweep driver or a scheduler can tell a stopped run from a finished one.

Under DDP a signal may reach one process only (``kill`` of the launching process, ``timeout``): after each
step the processes agree on whether any of them received one, so they all save at the same step and stop."""
import signal
from pathlib import Path

import lightning as L
import torch


class RunInterrupted(Exception):
    """Training stopped on a signal; ``checkpoint`` continues it (``python train.py resume=PATH``)."""

    def __init__(self, signum: int, checkpoint: Path | None, step: int, rank: int = 0):
        self.signum, self.checkpoint, self.step = signum, checkpoint, step
        self.rank = rank  # of the process that raised it; under DDP process 0 reports, the others end quietly
        where = f"checkpoint saved to {checkpoint}" if checkpoint else "no checkpoint saved"
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}: {where}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention for a process ended by a signal


class StopOnSignal(L.Callback):
    """Catches SIGTERM and SIGINT from ``install()`` on; after the step in flight, saves ``checkpoint`` and
    raises RunInterrupted. A second SIGINT stops at once (Python's KeyboardInterrupt)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, checkpoint: Path):
        self.checkpoint = Path(checkpoint)
        self.received: int | None = None
        self.saved: Path | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def install(self):
        for signum in self.SIGNALS:
            self._previous.setdefault(signum, signal.getsignal(signum))
            signal.signal(signum, self._handle)

    def uninstall(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    # again once fit runs: Lightning then wraps SIGTERM in its own handler, which would stop at the end of the
    # epoch with exit status 0
    def on_sanity_check_start(self, trainer, pl_module):
        self.install()

    def on_train_start(self, trainer, pl_module):
        self.install()

    def received_anywhere(self, trainer) -> int | None:
        """The signal this process or, under DDP, any other one received (the same answer in every process)."""
        if trainer.world_size == 1:
            return self.received
        signum = torch.tensor(self.received or 0, device=trainer.strategy.root_device)
        return int(trainer.strategy.reduce(signum, reduce_op="max")) or None

    def stop_if_received(self, trainer):
        """Save the checkpoint and raise RunInterrupted if a signal came (every process must call this together)."""
        received = self.received_anywhere(trainer)
        if received is None:
            return
        self.received = received
        if self.saved is None:
            self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            trainer.save_checkpoint(self.checkpoint)  # every process takes part; process 0 writes
            self.saved = self.checkpoint
        raise RunInterrupted(self.received, self.saved, trainer.global_step, trainer.global_rank)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.stop_if_received(trainer)

    def on_exception(self, trainer, pl_module, exception):
        # Lightning stops on its own SIGTERM flag outside training steps (validation, sanity check): save there too
        if self.received is not None and self.saved is None and not isinstance(exception, RunInterrupted):
            self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            trainer.save_checkpoint(self.checkpoint)
            self.saved = self.checkpoint
