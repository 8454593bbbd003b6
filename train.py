"""Train a zoo LM: python train.py [model=NAME] [task=NAME] [trainer=cpu|gpu|ddp|fsdp] [logger=csv|tensorboard|wandb]
[resume=PATH|last] [eval=PATH|last] [imports=[my_package.mixers]] [key=value ...]"""
import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


def fail(message, code: int):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def remove_run_folder(output_dir: Path):
    """A run whose config fails its checks leaves nothing behind: its folder, and parents it leaves empty."""
    shutil.rmtree(output_dir, ignore_errors=True)
    for parent in output_dir.parents:
        if parent == Path.cwd() or not parent.is_relative_to(Path.cwd()):
            break
        try:
            parent.rmdir()  # only if empty
        except OSError:
            break


@hydra.main(config_path="configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig):
    # imported here so that `--help` and Hydra's own config errors answer at once
    from zoo.interrupt import RunInterrupted
    from zoo.train import execute, prepare

    hydra_config = HydraConfig.get()
    output_dir = Path(hydra_config.runtime.output_dir).resolve()
    try:
        run = prepare(cfg, list(hydra_config.overrides.task))
    except ValueError as error:  # bad names and impossible settings: one line, no traceback, no folder
        remove_run_folder(output_dir)
        fail(error, 2)
    if run.resume_folder() is not None:  # the run goes on in its own folder; this invocation's stays empty
        remove_run_folder(output_dir)
        output_dir = run.resume_folder()
    try:
        result = execute(run, output_dir)
    except ValueError as error:
        fail(error, 2)
    except RunInterrupted as stop:
        if stop.rank:  # another process of a multi-process run: process 0 says where the checkpoint is
            sys.exit(0)
        fail(f"{stop}" + (f"; continue with: python train.py resume={os.path.relpath(stop.checkpoint)}"
                          if stop.checkpoint else ""), stop.exit_code)
    return result["mean_accuracy"]  # the value a Hydra sweeper would optimise


if __name__ == "__main__":
    main()
