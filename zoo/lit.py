"""Training: a LightningModule around zoo.model.LM with per-slice accuracy on the scored positions."""
import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from zoo.sparse_adam import SparseBlockAdam, sparse_parameters
from zoo.tasks.mqar import IGNORE_INDEX


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


class LitLM(L.LightningModule):
    def __init__(self, model: nn.Module, slice_keys: list[str], lr: float = 3e-3, weight_decay: float = 0.1,
                 betas=(0.9, 0.98), warmup_fraction: float = 0.1, min_lr_ratio: float = 0.01):
        super().__init__()
        self.model = model
        self.slice_keys = list(slice_keys)
        self.lr, self.weight_decay, self.betas = lr, weight_decay, tuple(betas)
        self.warmup_fraction, self.min_lr_ratio = warmup_fraction, min_lr_ratio
        make = lambda: MulticlassAccuracy(num_classes=model.vocab_size, average="micro", ignore_index=IGNORE_INDEX)
        self.val_accuracy = nn.ModuleList(make() for _ in self.slice_keys)
        self.test_accuracy = nn.ModuleList(make() for _ in self.slice_keys)
        self.test_results: dict[str, float] = {}

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
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _evaluate(self, batch, dataloader_idx: int, stage: str, metrics: nn.ModuleList):
        loss, logits = self._loss(batch)
        metric = metrics[dataloader_idx]
        metric.update(logits.argmax(-1).flatten(), batch["labels"].flatten())
        key = self.slice_keys[dataloader_idx]
        self.log(f"{stage}/acc/{key}", metric, add_dataloader_idx=False, on_epoch=True)
        self.log(f"{stage}/loss/{key}", loss, add_dataloader_idx=False)

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._evaluate(batch, dataloader_idx, "val", self.val_accuracy)

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._evaluate(batch, dataloader_idx, "test", self.test_accuracy)

    def on_validation_epoch_end(self):
        # mean over slices: one number to watch in the progress bar
        accuracies = [self.trainer.callback_metrics.get(f"val/acc/{k}") for k in self.slice_keys]
        if all(a is not None for a in accuracies):
            self.log("val/acc", torch.stack([a.float() for a in accuracies]).mean(), prog_bar=True)

    def on_test_epoch_end(self):
        self.test_results = {k: float(self.trainer.callback_metrics[f"test/acc/{k}"]) for k in self.slice_keys}

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
