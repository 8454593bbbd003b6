"""Training: a LightningModule around zoo.model.LM with per-slice accuracy on the scored positions.

Evaluation metrics are torchmetrics states (correct and scored counts; summed loss and scored tokens), computed
once per epoch on every process from the states summed over all processes (torchmetrics' sync): under DDP, with
each example evaluated on one process (zoo.tasks.data.SegmentBatchSampler), they equal one process's over the
whole split, and every process holds the same numbers (the best checkpoint and early stopping agree).

A language-modelling task's DataModule also exposes ``bytes_per_token`` ({"val": ..., "test": ...}: UTF-8
bytes per scored token); LitLM then logs perplexity and bits per byte (comparable across tokenisers) too.
"""
import math
import sys
import time

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from zoo.model import build_model
from zoo.sparse_adam import SparseBlockAdam, sparse_parameters
from zoo.tasks.data import IGNORE_INDEX


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on norms, biases, embeddings, or parameters marked _no_weight_decay.

    Parameters marked _sparse_grad (a memory bank) are left out: SparseBlockAdam steps them.
    """
    no_decay_ids = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if (isinstance(module, (nn.LayerNorm, nn.RMSNorm, nn.Embedding)) or name == "bias" or param.ndim < 2
                    or getattr(param, "_no_weight_decay", False)):
                no_decay_ids.add(id(param))
    params = {id(p): p for p in model.parameters()  # tied weights counted once
              if p.requires_grad and not getattr(p, "_sparse_grad", False)}
    decay = [p for i, p in params.items() if i not in no_decay_ids]
    no_decay = [p for i, p in params.items() if i in no_decay_ids]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Learning-rate multiplier: linear warmup, then cosine decay to min_ratio."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def check_optim_settings(lr, weight_decay, betas, warmup_fraction, min_lr_ratio):
    """Fail before training, naming the setting and its allowed range (AdamW would only fail at its first step)."""
    def number(value):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not number(lr) or lr <= 0:
        raise ValueError(f"optim.lr must be a positive number, got {lr!r}")
    if not number(weight_decay) or weight_decay < 0:
        raise ValueError(f"optim.weight_decay must be a number >= 0, got {weight_decay!r}")
    if not (isinstance(betas, (list, tuple)) and len(betas) == 2 and all(number(b) and 0 <= b < 1 for b in betas)):
        raise ValueError(f"optim.betas must be two numbers in [0, 1), got {betas!r}")
    if not number(warmup_fraction) or not 0 <= warmup_fraction <= 1:
        raise ValueError(f"optim.warmup_fraction must be in [0, 1], got {warmup_fraction!r}")
    if not number(min_lr_ratio) or not 0 <= min_lr_ratio <= 1:
        raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {min_lr_ratio!r}")


class LitLM(L.LightningModule):
    """``model`` is a built LM, or None with ``model_config`` (the LM's keyword arguments, vocab_size included).
    Pass model_config and run_config (the resolved run config) with a built model too: checkpoints then carry
    them, so ``LitLM.load_from_checkpoint(path)`` and ``zoo.checkpoints.load_model(path)`` need nothing else."""

    def __init__(self, model: nn.Module | None = None, slice_keys: list[str] = (), lr: float = 3e-3,
                 weight_decay: float = 0.1, betas=(0.9, 0.98), warmup_fraction: float = 0.1,
                 min_lr_ratio: float = 0.01, model_config: dict | None = None, run_config: dict | None = None):
        super().__init__()
        check_optim_settings(lr, weight_decay, betas, warmup_fraction, min_lr_ratio)
        if model is None:
            if model_config is None:
                raise ValueError("LitLM needs a model or a model_config to build one from")
            model = build_model(model_config, (run_config or {}).get("imports", ()))
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.slice_keys = list(slice_keys)
        self.lr, self.weight_decay, self.betas = lr, weight_decay, tuple(betas)
        self.warmup_fraction, self.min_lr_ratio = warmup_fraction, min_lr_ratio
        make = lambda: MulticlassAccuracy(num_classes=model.vocab_size, average="micro", ignore_index=IGNORE_INDEX)
        self.val_accuracy = nn.ModuleList(make() for _ in self.slice_keys)
        self.test_accuracy = nn.ModuleList(make() for _ in self.slice_keys)
        # mean loss per scored token (each batch's mean weighted by its scored tokens)
        self.val_loss = nn.ModuleList(MeanMetric() for _ in self.slice_keys)
        self.test_loss = nn.ModuleList(MeanMetric() for _ in self.slice_keys)
        self.val_results: dict[str, float] = {}   # per slice, from the latest validation
        self.test_results: dict[str, float] = {}
        self.test_metrics: dict[str, dict] = {}  # language-modelling tasks: loss, perplexity, bits per byte
        self.diverged_at_step: int | None = None  # the step whose training loss was not finite (training stopped)
        self._batch_started = None

    def forward(self, input_ids):
        return self.model(input_ids)

    def _loss(self, batch):
        # every batch entry besides input_ids and labels is a model input (a memory path, document ids, ...)
        extras = {k: v for k, v in batch.items() if k not in ("input_ids", "labels")}
        logits = self.model(batch["input_ids"], **extras)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten(), ignore_index=IGNORE_INDEX)
        return loss, logits

    def training_step(self, batch, batch_idx):
        loss, _ = self._loss(batch)
        diverged = not bool(torch.isfinite(loss))
        if self.trainer.world_size > 1:  # every process stops at the same step, or the others wait for it forever
            diverged = self.trainer.strategy.reduce_boolean_decision(diverged, all=False)
        if diverged:
            return self._stop_diverged(loss)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _stop_diverged(self, loss):
        """A non-finite loss (on any process): stop training at this step, say so in one line; the run is then tested
        as usual and its result records the step. One process skips the step's update (returns None); several,
        which Lightning does not let skip, all return a loss of zero gradient, so DDP's all-reduce runs everywhere
        and the weights stay finite (only the optimizer's momentum and weight decay move them, once)."""
        self.diverged_at_step = self.global_step
        self.trainer.should_stop = True
        if self.trainer.is_global_zero:
            what = f"became {loss.item()}" if self.trainer.world_size == 1 else "was not finite on some process"
            print(f"warning: the training loss {what} at step {self.global_step}: training stopped there (lower "
                  f"optim.lr, now {self.lr:g}); the test uses the best checkpoint or the weights it stopped with",
                  file=sys.stderr, flush=True)
        if self.trainer.world_size == 1:
            return None
        return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0

    def on_train_batch_start(self, batch, batch_idx):
        self._batch_started = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        # forward, backward and optimizer step of this batch
        seconds = time.perf_counter() - self._batch_started
        self.log("train/tok_s", batch["input_ids"].numel() / seconds, prog_bar=True, on_step=True, on_epoch=False)

    def _evaluate(self, batch, dataloader_idx: int, accuracy: nn.ModuleList, losses: nn.ModuleList):
        loss, logits = self._loss(batch)
        labels = batch["labels"].flatten()
        accuracy[dataloader_idx].update(logits.argmax(-1).flatten(), labels)
        scored = labels.ne(IGNORE_INDEX).sum()
        if scored > 0:  # a batch with nothing scored has no mean loss
            losses[dataloader_idx].update(loss.detach(), weight=scored)

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._evaluate(batch, dataloader_idx, self.val_accuracy, self.val_loss)

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._evaluate(batch, dataloader_idx, self.test_accuracy, self.test_loss)

    def _log_whole_split(self, name: str, value, **options):
        # the value is already the whole split's and equal on every process; max over processes leaves it as it
        # is, and tells Lightning it is synchronised (it would otherwise ask for sync_dist)
        self.log(name, value, sync_dist=True, reduce_fx="max", **options)

    def _slice_metrics(self, stage: str, accuracy: nn.ModuleList, losses: nn.ModuleList):
        """Log each slice's accuracy and mean loss per scored token over the whole split and reset the states;
        returns ({slice: accuracy}, {slice: loss}). Every process computes them, in the same order: each compute
        sums its states over the processes."""
        accuracies, mean_losses = {}, {}
        for key, correct, loss in zip(self.slice_keys, accuracy, losses):
            accuracies[key], mean_losses[key] = float(correct.compute()), float(loss.compute())
            self._log_whole_split(f"{stage}/acc/{key}", accuracies[key])
            self._log_whole_split(f"{stage}/loss/{key}", mean_losses[key])
            correct.reset()
            loss.reset()
        return accuracies, mean_losses

    def on_validation_epoch_end(self):
        accuracies, losses = self._slice_metrics("val", self.val_accuracy, self.val_loss)
        # mean over slices: one number to watch in the progress bar
        self._log_whole_split("val/acc", sum(accuracies.values()) / len(accuracies), prog_bar=True)
        if not self.trainer.sanity_checking:
            self.val_results = accuracies
        metrics = self._language_model_metrics("val", losses)
        if metrics and not self.trainer.sanity_checking:
            loss, ppl, bpb = (sum(m[name] for m in metrics.values()) / len(metrics)
                              for name in ("loss", "perplexity", "bits_per_byte"))
            self.print(f"epoch {self.current_epoch} (step {self.global_step}): validation loss {loss:.4f}, "
                       f"perplexity {ppl:.3f}, bits per byte {bpb:.4f}")

    def on_test_epoch_end(self):
        self.test_results, losses = self._slice_metrics("test", self.test_accuracy, self.test_loss)
        self.test_metrics = self._language_model_metrics("test", losses)

    def _language_model_metrics(self, stage: str, losses: dict[str, float]) -> dict[str, dict]:
        """Perplexity and bits per byte from the epoch's mean loss per scored token (``losses``), logged per slice
        and averaged over slices; {} unless the task says how many bytes a token stands for."""
        datamodule = getattr(self.trainer, "datamodule", None)
        bytes_per_token = getattr(datamodule, "bytes_per_token", None) or {}
        if stage not in bytes_per_token:
            return {}
        metrics = {}
        for key in self.slice_keys:
            loss = losses[key]  # nats per token
            metrics[key] = {"loss": loss, "perplexity": math.exp(min(loss, 80.0)),
                            "bits_per_byte": loss / (math.log(2) * bytes_per_token[stage])}
            self._log_whole_split(f"{stage}/ppl/{key}", metrics[key]["perplexity"])
            self._log_whole_split(f"{stage}/bpb/{key}", metrics[key]["bits_per_byte"])
        for name, short in (("loss", "loss"), ("perplexity", "ppl"), ("bits_per_byte", "bpb")):
            self._log_whole_split(f"{stage}/{short}", sum(m[name] for m in metrics.values()) / len(metrics),
                                  prog_bar=short == "bpb")
        return metrics

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(parameter_groups(self.model, self.weight_decay), lr=self.lr, betas=self.betas)
        # row-sparse parameters (a memory bank) get their own optimizer, stepped in optimizer_step below
        sparse = sparse_parameters(self.model)
        self.sparse_optimizer = (SparseBlockAdam(sparse, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)
                                 if sparse else None)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, int(self.warmup_fraction * total))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, total, warmup, self.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)  # forward, backward, dense step
        if getattr(self, "sparse_optimizer", None) is not None:
            lr = optimizer.param_groups[0]["lr"]  # the dense schedule's current rate, shared
            for group in self.sparse_optimizer.param_groups:
                group["lr"] = lr
            self.sparse_optimizer.step()
            self.sparse_optimizer.zero_grad(set_to_none=True)
