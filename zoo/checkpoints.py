"""Checkpoints that stand alone: each carries the resolved run config, so a model loads from a path.

``load_model(path)`` -> (LM, config) is what other tools call (sampling, evaluation); ``LitLM.load_from_checkpoint
(path)`` works too. ``find_last()`` is what ``python train.py resume=last`` continues.
"""
from pathlib import Path

import torch

from zoo.model import build_model

CHECKPOINT_DIR = "checkpoints"    # inside a run's output folder: last.ckpt, best.ckpt
LAST, BEST = "last.ckpt", "best.ckpt"


def read_checkpoint(path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} " + ("is a folder; expected a .ckpt file written by python "
                                                          "train.py" if path.is_dir() else "does not exist"))
    try:  # our own files, holding plain containers besides tensors; optimizer states need the full unpickler
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # not a torch file, cut short, unreadable: one line naming the file
        reason = (str(error).strip().splitlines() or [""])[0].split(". ")[0].rstrip(".") or "no detail"
        raise ValueError(f"{str(path)!r} is not a readable checkpoint ({type(error).__name__}: {reason}); expected "
                         f"a .ckpt file written by python train.py") from None
    if not isinstance(checkpoint, dict) or "model_config" not in checkpoint.get("hyper_parameters", {}):
        raise ValueError(f"{str(path)!r} is not a zoo checkpoint (it carries no model_config); it was not written "
                         f"by python train.py")
    return checkpoint


def run_config(checkpoint: dict) -> dict:
    """The resolved config of the run that wrote the checkpoint (model, task, optim, trainer, seed, imports)."""
    return checkpoint["hyper_parameters"].get("run_config") or {}


def load_model(path, map_location="cpu"):
    """(LM in eval mode with the checkpoint's weights, the run's resolved config as a dict) from a path alone."""
    checkpoint = read_checkpoint(path, map_location)
    config = run_config(checkpoint)
    model = build_model(checkpoint["hyper_parameters"]["model_config"], config.get("imports", ()))
    prefix = "model."  # LitLM holds the LM as self.model
    weights = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    model.load_state_dict(weights)
    return model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu").eval(), config


def find_last(root="outputs") -> Path:
    """The most recently written last.ckpt under root (the runs' output folders)."""
    found = sorted(Path(root).glob(f"**/{CHECKPOINT_DIR}/{LAST}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ValueError(f"resume=last: no {CHECKPOINT_DIR}/{LAST} under {str(root)!r}; pass resume=PATH to a .ckpt file")
    return found[-1]
