"""Sweeps whose runs are whole ``zoo.train`` runs (the memory and the text comparisons): a config composed from
configs/ like ``python train.py`` does, trained in its own folder (checkpoints, logs, test_accuracy.json)."""
import hashlib
import json
from pathlib import Path

from zoo.bench.sweep import RunSpec

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
QUIET = ["+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false", "print_test_table=false"]


def compose_config(overrides: list[str], hydra: bool = False):
    """configs/train.yaml with ``overrides`` (and the quiet settings a sweep wants), as train.py would compose it."""
    from hydra import compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=[*overrides, *QUIET], return_hydra_config=hydra)


def train_spec(name: str, config: dict, out: Path) -> RunSpec:
    """The run ``name`` of a config (plain dict): its key hashes the config, its folder is OUT/name."""
    digest = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    return RunSpec(f"{name}-{digest}", {"name": name, "train": config, "dir": str(Path(out) / name)})


def train_in_folder(config: dict, device: str) -> dict:
    """One run of such a sweep: zoo.train.train in its own folder; returns its test result."""
    from omegaconf import OmegaConf
    from zoo.train import train

    print(f"[{config['name']}] training in {config['dir']}", flush=True)
    result = train(OmegaConf.create(config["train"]), Path(config["dir"]))
    accuracy = ", ".join(f"{s['slice']} {s['accuracy']:.3f}" for s in result["slices"])
    print(f"[{config['name']}] {result['sizes']} | {accuracy}", flush=True)
    return result
