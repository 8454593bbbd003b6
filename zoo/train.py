"""Build everything a run needs from a config, fit, test, and report accuracy per slice."""
import json
import logging
import os
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf

from zoo.bench.report import format_table
from zoo.lit import LitLM
from zoo.model import LM
from zoo.tasks import build_task


def quiet_lightning():
    """Keep the console to what a user acts on: the progress bar and the result table."""
    # batches are slices of in-memory tensors: worker processes would only add start-up time
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
    # Hydra's root handler would print every Lightning info line a second time
    logging.getLogger("lightning.pytorch").propagate = False


def slice_rows(model, slices: list[dict], accuracies: dict) -> list[dict]:
    """One row per test slice: the task's description of it, the model's state size at its length, the accuracy."""
    return [{**info, "state_size": model.state_size(info["input_seq_len"]), "accuracy": accuracies[info["slice"]]}
            for info in slices]


def build(cfg: DictConfig):
    """(datamodule, LitLM) from a train config; raises ValueError on any bad name or impossible setting."""
    task = OmegaConf.to_container(cfg.task, resolve=True)
    datamodule = build_task(task.pop("name"), **task)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = LM(vocab_size=datamodule.vocab_size, **OmegaConf.to_container(cfg.model, resolve=True))
    lit = LitLM(model, datamodule.slice_keys, **OmegaConf.to_container(cfg.optim, resolve=True))
    return datamodule, lit


def train(cfg: DictConfig, output_dir: Path) -> dict:
    quiet_lightning()
    datamodule, lit = build(cfg)
    trainer_options = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer = L.Trainer(logger=CSVLogger(str(output_dir), name="logs"), default_root_dir=str(output_dir),
                        **trainer_options)
    trainer.fit(lit, datamodule=datamodule)
    trainer.test(lit, datamodule=datamodule, verbose=False)
    model = lit.model
    rows = slice_rows(model, datamodule.describe_slices(), lit.test_results)
    result = {
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "task": OmegaConf.to_container(cfg.task, resolve=True),
        "optim": OmegaConf.to_container(cfg.optim, resolve=True),
        "num_parameters": model.num_parameters(),
        "sizes": model.size_report(),  # a memory adds bank / fetched / anchor / active counts
        "mean_accuracy": sum(r["accuracy"] for r in rows) / len(rows),
        "slices": rows,
    }
    if trainer.is_global_zero:
        (output_dir / "test_accuracy.json").write_text(json.dumps(result, indent=2))
        if cfg.get("print_test_table", True):
            print(f"\nTest accuracy per slice ({model.num_parameters():,} parameters), written to "
                  f"{os.path.relpath(output_dir / 'test_accuracy.json')}:")
            print(format_table(rows, list(rows[0])))
            print(f"mean accuracy {result['mean_accuracy']:.4f}")
    return result
