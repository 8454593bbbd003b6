"""Train a zoo LM: python train.py [model=NAME] [task=NAME] [trainer=cpu|gpu|ddp|fsdp] [key=value ...]"""
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(config_path="configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig):
    from zoo.train import train  # imported here so that `--help` and config errors answer at once

    try:
        result = train(cfg, Path(HydraConfig.get().runtime.output_dir))
    except ValueError as error:  # bad names and impossible settings: one line, no traceback wall
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    return result["mean_accuracy"]  # the value a Hydra sweeper would optimise


if __name__ == "__main__":
    main()
