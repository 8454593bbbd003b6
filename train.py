"""Train a zoo LM: python train.py [model=NAME] [task=NAME] [trainer=cpu|gpu|ddp|fsdp] [logger=csv|tensorboard|wandb]
[resume=PATH|last] [eval=PATH|last] [imports=[my_package.mixers]] [key=value ...]"""
import os
import sys
from pathlib import Path

from zoo.openmp import shorten_openmp_busy_wait

shorten_openmp_busy_wait()  # before anything imports torch

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from zoo.run_folder import register_resolvers, undo_hydra_writes

CONFIGS = Path(__file__).resolve().parent / "configs"
# options that reach config groups from elsewhere: then Hydra alone knows which options exist
OTHER_CONFIG_SOURCES = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn", "hydra.searchpath")


def fail(message, code: int):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def check_group_choices(argv: list[str]):
    """``model=mamaba``: one line naming the valid options (Hydra's own answer is ~20 lines and exit 1)."""
    if any(arg.split("=", 1)[0] in OTHER_CONFIG_SOURCES for arg in argv):
        return
    for arg in argv:
        key, _, value = arg.partition("=")
        group = key.lstrip("+~")
        if arg.startswith("-") or not value or "/" in group or not (CONFIGS / group).is_dir() or "(" in value:
            continue
        options = sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))
        unknown = [v for v in value.split(",") if v != "null" and v not in options]  # a,b: a multirun
        if unknown:
            fail(f"{group}={unknown[0]} is not a config in configs/{group}/; options: {', '.join(options)}", 2)


@hydra.main(config_path="configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig):
    # imported here so that `--help` and Hydra's own config errors answer at once
    from zoo.interrupt import RunInterrupted
    from zoo.train import execute, prepare

    hydra_config = HydraConfig.get()
    output_dir = Path(hydra_config.runtime.output_dir).resolve()
    log_name = f"{hydra_config.job.name}.log"
    try:
        run = prepare(cfg, list(hydra_config.overrides.task))
    except ValueError as error:  # bad names and impossible settings: one line, no traceback, no new folder
        undo_hydra_writes(output_dir, log_name)
        fail(error, 2)
    if run.resume_folder() is not None:  # the run goes on in its own folder; this invocation's is not needed
        undo_hydra_writes(output_dir, log_name)
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


register_resolvers()  # before Hydra composes: hydra.run.dir is named by zoo.run_folder.run_dir

if __name__ == "__main__":
    check_group_choices(sys.argv[1:])
    main()
