"""A training run from a config: check and build everything first (a bad setting fails before anything is
written), then fit with checkpoints, a logger and signal handling, test once, and report accuracy per slice.

``prepare(cfg)`` does the checking and building; ``execute(run, output_dir)`` does the work. ``train(cfg,
output_dir)`` is both. ``resume=PATH|last`` continues a checkpoint's run; ``eval=PATH|last`` only tests it.
"""
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from zoo.report import format_table
from zoo.checkpoints import BEST, CHECKPOINT_DIR, LAST, find_last, load_model, read_checkpoint, run_config
from zoo.checks import require_choice, require_known_keywords, require_scalar_types
from zoo.distributed import check_sparse_gradients, check_strategy
from zoo.interrupt import StopOnSignal
from zoo.lit import LitLM
from zoo.model import LM
from zoo.tasks import build_task
from zoo.tasks.data import ResumableTrainOrder
from zoo.user_modules import import_modules

DEFAULT_MONITOR = ("val/acc", "max")   # when a task does not name its main validation metric
RESULT_FILE = "test_accuracy.json"
LOGGERS = ("csv", "tensorboard", "wandb", "none")
# Trainer arguments train.py sets itself, and where the user sets them instead
RESERVED_TRAINER_KEYS = {
    "logger": "choose it with logger=csv|tensorboard|wandb|none",
    "callbacks": "train.py adds checkpointing, early stopping and signal handling itself",
    "default_root_dir": "runs write to Hydra's output folder (hydra.run.dir)",
    "enable_checkpointing": "use checkpoint=true|false",
}
LIT_ARGUMENTS_SET_HERE = ("model", "slice_keys", "model_config", "run_config")
TASKS_SUPPLYING = {"memory_path": "task=facts"}  # where an MLP's extra input comes from


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


def plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True)


# ---- checks -----------------------------------------------------------------------------------------------------
def check_trainer(options: dict):
    for key, where in RESERVED_TRAINER_KEYS.items():
        if key in options:
            raise ValueError(f"trainer.{key} is set by train.py: {where}")
    require_known_keywords(L.Trainer, options, "trainer")
    require_scalar_types(L.Trainer.__init__, options, "trainer")
    if str(options.get("accelerator", "auto")) in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError("trainer=gpu needs a CUDA GPU and torch sees none on this machine; use trainer=cpu")


def logger_class(options: dict):
    """The Lightning logger class for logger=NAME (None for none); one line when its package is missing."""
    name = options.get("name")
    require_choice("logger", name, LOGGERS, "train.py")
    if name == "none":
        return None
    from importlib.util import find_spec
    if name == "tensorboard":
        if find_spec("tensorboard") is None and find_spec("tensorboardX") is None:
            raise ValueError("logger=tensorboard needs the tensorboard package: pip install 'zoo[tensorboard]' "
                             "(or use logger=csv)")
        from lightning.pytorch.loggers import TensorBoardLogger
        return TensorBoardLogger
    if name == "wandb":
        if find_spec("wandb") is None:
            raise ValueError("logger=wandb needs the wandb package: pip install 'zoo[wandb]' (or use logger=csv)")
        from lightning.pytorch.loggers import WandbLogger
        return WandbLogger
    from lightning.pytorch.loggers import CSVLogger
    return CSVLogger


def build_logger(options: dict, output_dir: Path):
    options = dict(options)
    cls = logger_class(options)
    name = options.pop("name")
    if cls is None:
        return False
    if name == "wandb":
        return cls(save_dir=str(output_dir), **options)
    return cls(str(output_dir), name="logs" if name == "csv" else name, **options)


# ---- configs of checkpointed runs ---------------------------------------------------------------------------------
def check_top_level(cfg: DictConfig):
    """A misspelled or unused top-level setting (``+ckpt_path=...``) must not be silently ignored."""
    declared = Path(__file__).resolve().parents[1] / "configs" / "train.yaml"
    if not declared.is_file():  # installed without the configs: nothing to compare with
        return
    raw = OmegaConf.load(declared)
    groups = [next(iter(d)) if isinstance(d, dict) or OmegaConf.is_dict(d) else str(d) for d in raw.get("defaults", [])]
    known = set(raw) - {"defaults", "hydra"} | {g.split("@")[0].lstrip("/") for g in groups if g != "_self_"}
    unknown = [key for key in cfg if key not in known]
    if unknown:
        raise ValueError(f"unknown top-level setting{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(sorted(known))} (to continue a run: resume=PATH)")


def checkpoint_path(value, prefer: str = LAST) -> Path:
    """The .ckpt that resume=/eval= name: a file, ``last``, or a run folder (its checkpoints/``prefer``, else the
    other one: eval prefers best.ckpt, resume last.ckpt)."""
    path = find_last() if str(value) == "last" else Path(str(value))
    if path.is_dir():
        folder = path if path.name == CHECKPOINT_DIR else path / CHECKPOINT_DIR
        found = [folder / name for name in dict.fromkeys((prefer, BEST, LAST)) if (folder / name).is_file()]
        if not found:
            raise ValueError(f"{str(path)!r} is a folder without {CHECKPOINT_DIR}/{BEST} or {CHECKPOINT_DIR}/{LAST}; "
                             f"give resume= or eval= a .ckpt file, a run folder that holds one, or last")
        return found[0]
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} does not exist (give resume= or eval= a .ckpt file, a run "
                         f"folder, or last)")
    return path


def config_of_checkpoint(cfg: DictConfig, path: Path, overrides=()) -> DictConfig:
    """A resumed or evaluated run is the checkpoint's run: its stored config, except the settings named on this
    command line (``overrides``, Hydra's override strings), which are taken from ``cfg``."""
    stored = OmegaConf.create(run_config(read_checkpoint(path)))
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key not in ("resume", "eval") and not key.startswith("hydra"):
            OmegaConf.update(stored, key, OmegaConf.select(cfg, key), force_add=True)
    stored.resume, stored.eval = cfg.get("resume"), cfg.get("eval")
    return stored


def check_mlp_inputs(model: LM, datamodule, mlp, task_name: str):
    """An MLP that reads a batch entry the task never supplies (model.mlp=hpm without memory paths) would train as
    something else (the memory's anchor alone): say so before training."""
    from zoo.model import _keyword_inputs
    supplied = set(getattr(datamodule, "model_inputs", ()))
    for mlp_class in {type(layer.mlp) for layer in model.layers if layer.mlp is not None}:
        missing = sorted((_keyword_inputs(mlp_class) or set()) - supplied)
        if missing:
            name = mlp.get("name") if isinstance(mlp, dict) else mlp
            where = ", ".join(dict.fromkeys(TASKS_SUPPLYING.get(m, "a task that supplies it") for m in missing))
            raise ValueError(f"model.mlp={name} reads {', '.join(missing)} from each batch, which task {task_name!r} "
                             f"does not supply: it would train without it (a memory as its anchor alone); use {where}")


# ---- building -----------------------------------------------------------------------------------------------------
@dataclass
class Run:
    cfg: DictConfig
    datamodule: L.LightningDataModule
    lit: LitLM
    trainer_options: dict
    checkpoint: Path | None = None   # resume from it, or (eval) test it
    evaluate_only: bool = False

    def resume_folder(self) -> Path | None:
        """The run folder a resumed checkpoint lives in (<folder>/checkpoints/x.ckpt): a resumed run goes on
        writing there, so its best checkpoint is still chosen among all of the run's validations."""
        if self.checkpoint is not None and not self.evaluate_only and self.checkpoint.parent.name == CHECKPOINT_DIR:
            return self.checkpoint.parent.parent
        return None

    @property
    def monitor(self) -> tuple[str, str]:
        return tuple(getattr(self.datamodule, "monitor", DEFAULT_MONITOR))


def build(cfg: DictConfig):
    """(datamodule, LitLM) from a train config; raises ValueError on any bad name or impossible setting."""
    import_modules(cfg.get("imports") or [])
    task = plain(cfg.task)
    task_name = task.pop("name")
    datamodule = build_task(task_name, **task)
    model_config = {"vocab_size": datamodule.vocab_size, **plain(cfg.model)}
    require_known_keywords(LM, model_config, "model", skip=("vocab_size",))
    optim = plain(cfg.optim)
    require_known_keywords(LitLM, optim, "optim", skip=LIT_ARGUMENTS_SET_HERE)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = LM(**model_config)
    check_mlp_inputs(model, datamodule, model_config.get("mlp"), task_name)
    lit = LitLM(model, datamodule.slice_keys, **optim, model_config=model_config, run_config=plain(cfg))
    return datamodule, lit


def prepare(cfg: DictConfig, overrides=()) -> Run:
    """Check and build everything a run needs; writes nothing. ValueError (one line) on any bad setting."""
    check_top_level(cfg)
    if cfg.get("resume") and cfg.get("eval"):
        raise ValueError("resume= and eval= exclude each other: resume continues training, eval only tests")
    checkpoint = None
    if cfg.get("resume") or cfg.get("eval"):
        checkpoint = checkpoint_path(cfg.get("resume") or cfg.get("eval"), prefer=BEST if cfg.get("eval") else LAST)
        cfg = config_of_checkpoint(cfg, checkpoint, overrides)
    trainer_options = plain(cfg.trainer)
    check_strategy(trainer_options)
    check_trainer(trainer_options)
    logger_class(plain(cfg.get("logger") or {"name": "csv"}))
    datamodule, lit = build(cfg)
    check_sparse_gradients(trainer_options, lit.model)
    if cfg.get("eval"):
        lit.model.load_state_dict(load_model(checkpoint)[0].state_dict())
    return Run(cfg, datamodule, lit, trainer_options, checkpoint, evaluate_only=bool(cfg.get("eval")))


# ---- running ------------------------------------------------------------------------------------------------------
def execute(run: Run, output_dir: Path, callbacks=()) -> dict:
    """Fit (unless eval), test once (the best checkpoint by validation when there is one), write the result."""
    quiet_lightning()
    if isinstance(run.datamodule, ResumableTrainOrder):  # it is resumable, through the DataModule's state
        warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch.*")
    output_dir = Path(output_dir)
    checkpoints = output_dir / CHECKPOINT_DIR
    stop = StopOnSignal(checkpoints / LAST)
    best = _best_checkpoint(run, checkpoints)
    callbacks = [stop, *callbacks, *([best] if best else []), *_early_stopping(run)]
    trainer = L.Trainer(logger=build_logger(plain(run.cfg.get("logger") or {"name": "csv"}), output_dir),
                        callbacks=callbacks, default_root_dir=str(output_dir), enable_checkpointing=best is not None,
                        **run.trainer_options)
    if run.evaluate_only:
        trainer.test(run.lit, datamodule=run.datamodule, verbose=False)
        tested = str(run.checkpoint)
    else:
        _fit_with_signals(trainer, run, stop, output_dir, best)
        tested = _test_best(trainer, run, best)
    result = _result(run, trainer, best, tested)
    if trainer.is_global_zero:
        _write_result(run.cfg, output_dir, result, tested)
    return result


def _best_checkpoint(run: Run, checkpoints: Path):
    """The callback that keeps best.ckpt (by the task's validation metric) and last.ckpt; None when off."""
    if not run.cfg.get("checkpoint", True) or run.evaluate_only:
        return None
    from lightning.pytorch.callbacks import ModelCheckpoint
    metric, mode = run.monitor
    return ModelCheckpoint(dirpath=checkpoints, filename=Path(BEST).stem, monitor=metric, mode=mode,
                           save_top_k=1, save_last=True, enable_version_counter=False)


def _early_stopping(run: Run) -> list:
    if not run.cfg.get("early_stopping_patience"):
        return []
    from lightning.pytorch.callbacks import EarlyStopping
    metric, mode = run.monitor
    return [EarlyStopping(monitor=metric, mode=mode, patience=run.cfg.early_stopping_patience)]


def _fit_with_signals(trainer, run: Run, stop: StopOnSignal, output_dir: Path, best):
    """trainer.fit with SIGTERM/SIGINT turned into a checkpoint and RunInterrupted (raised by ``stop``)."""
    checkpoints = output_dir / CHECKPOINT_DIR
    if trainer.is_global_zero:
        print(f"run folder {os.path.relpath(output_dir)}" + (f"; checkpoints in {os.path.relpath(checkpoints)}"
                                                             if best else "")
              + (f"; resuming {run.checkpoint}" if run.checkpoint else ""), flush=True)
    from lightning.pytorch.utilities.exceptions import SIGTERMException
    stop.install()
    try:
        trainer.fit(run.lit, datamodule=run.datamodule, ckpt_path=str(run.checkpoint) if run.checkpoint else None)
    except SIGTERMException:  # Lightning's own stop, outside a training step (sanity check, validation)
        if stop.received is None:
            raise
    finally:
        stop.uninstall()
    # a signal outside a training step, or after the last one: not finished (every process asks together)
    stop.stop_if_received(trainer)


def _test_best(trainer, run: Run, best) -> str:
    """Test once, on the best checkpoint by validation when there is one; returns what was tested."""
    if best is not None and best.best_model_path:
        trainer.test(run.lit, datamodule=run.datamodule, verbose=False, ckpt_path=best.best_model_path,
                     weights_only=False)
        return os.path.relpath(best.best_model_path)
    trainer.test(run.lit, datamodule=run.datamodule, verbose=False)
    return "final weights"


def _result(run: Run, trainer, best, tested: str) -> dict:
    """The per-slice test table and what it came from: the content of test_accuracy.json."""
    cfg, model = run.cfg, run.lit.model
    metric, mode = run.monitor
    rows = slice_rows(model, run.datamodule.describe_slices(), run.lit.test_results)
    rows = [{**row, **run.lit.test_metrics.get(row["slice"], {})} for row in rows]  # language modelling: bpb etc.
    return {
        "model": plain(cfg.model),
        "task": plain(cfg.task),
        "optim": plain(cfg.optim),
        "num_parameters": model.num_parameters(),
        "sizes": model.size_report(),  # a memory adds bank / fetched / anchor / active counts
        "mean_accuracy": sum(r["accuracy"] for r in rows) / len(rows),
        "tested": tested,
        "validation": {"monitor": metric, "mode": mode,
                       "best": float(best.best_model_score) if best is not None and best.best_model_score is not None
                       else None},
        "global_step": trainer.global_step,
        "diverged_at_step": run.lit.diverged_at_step,  # None, or the step whose loss was not finite (stopped there)
        "slices": rows,
    }


def _write_result(cfg: DictConfig, output_dir: Path, result: dict, tested: str):
    (output_dir / RESULT_FILE).write_text(json.dumps(result, indent=2))
    if cfg.get("print_test_table", True):
        rows = result["slices"]
        print(f"\nTest accuracy per slice ({result['num_parameters']:,} parameters; {tested}), written to "
              f"{os.path.relpath(output_dir / RESULT_FILE)}:")
        print(format_table(rows, list(rows[0])))
        print(f"mean accuracy {result['mean_accuracy']:.4f}")


def train(cfg: DictConfig, output_dir: Path, overrides=(), callbacks=()) -> dict:
    """prepare + execute: the whole run (raises ValueError on a bad config, RunInterrupted on a signal). A resumed
    run writes to the folder of its checkpoint's run instead of output_dir."""
    run = prepare(cfg, overrides)
    return execute(run, run.resume_folder() or output_dir, callbacks)
