"""The run folder of ``python train.py``: what it is named, and what a failed command may remove from it.

Named after what runs (``run_dir``, a resolver in configs/train.yaml's ``hydra.run.dir``): the model config,
or a short name from the layer list when ``model.layers`` differs from that config's (and ``_<mlp>`` when
``model.mlp`` does); ``eval=CHECKPOINT`` writes to ``<run folder>/eval_<checkpoint name>``, where
``python -m zoo.evaluate`` writes.

Hydra makes the folder and writes ``.hydra/`` and its log before train.py sees the config. ``FolderGuard`` (a
Hydra callback) notes what was there before; a command that fails its checks then undoes only its own writes
(``undo_hydra_writes``): a folder it created goes away, and an existing run folder gets its ``.hydra/`` files
and log back as they were, its checkpoints and results untouched.

Imports no torch: it loads with Hydra, before any training code.
"""
from dataclasses import dataclass, field
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")
NAME_LIMIT = 48  # characters of a layer-list name (file names stay short)


# ---- naming -------------------------------------------------------------------------------------------------------
def _layer_names(layers) -> list[str]:
    if layers is None:
        return []
    if isinstance(layers, (str, dict)) or OmegaConf.is_dict(layers):
        layers = [layers]
    return [str(layer if isinstance(layer, str) else layer.get("name", "layer")) for layer in layers]


def _plain(node):
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def model_name(choice: str, layers, mlp=None) -> str:
    """The model config's name, unless its layer list was replaced: then the mixers' names in order, joined by
    ``+`` (``short_conv+mamba``), cut to NAME_LIMIT characters; ``_<mlp>`` added when the MLP was replaced
    (``conv_attention_hpm``)."""
    layers, mlp = _plain(layers), _plain(mlp)
    declared = CONFIGS / "model" / f"{choice}.yaml"
    configured = OmegaConf.to_container(OmegaConf.load(declared)) if declared.is_file() else {}
    name = str(choice)
    if configured.get("layers", layers) != layers and _layer_names(layers):
        name = "+".join(_layer_names(layers))[:NAME_LIMIT]
    if configured.get("mlp", mlp) != mlp and mlp:
        name += f"_{mlp if isinstance(mlp, str) else mlp.get('name', 'mlp')}"
    return name


def run_name(choice: str, layers, mlp, task: str) -> str:
    return f"{model_name(choice, layers, mlp)}_{task}"


def eval_folder(checkpoint) -> str | None:
    """Where eval=CHECKPOINT writes (zoo.evaluate's default); None when it names no checkpoint yet."""
    if checkpoint in (None, "", "None"):
        return None
    try:
        from zoo.checkpoints import BEST
        from zoo.evaluate import default_out
        from zoo.train import checkpoint_path
        return str(default_out(checkpoint_path(checkpoint, prefer=BEST)))
    except ValueError:  # train.py answers it in one line, after Hydra has made the folder this returns
        return None


def run_dir(default: str, choice: str, layers, mlp, task: str, evaluated=None) -> str:
    """hydra.run.dir: ``<default>_<model>_<task>``, or for eval= the evaluated run's eval folder."""
    return eval_folder(evaluated) or f"{default}_{run_name(choice, layers, mlp, task)}"


def register_resolvers():
    OmegaConf.register_new_resolver("zoo_run_dir", run_dir, replace=True)


# ---- what a failed command may remove -------------------------------------------------------------------------
@dataclass
class Before:
    """A folder as it was before Hydra wrote into it."""
    existed: bool
    first_existing_parent: Path
    hydra_files: dict = field(default_factory=dict)   # name -> bytes of .hydra/<name>
    log_size: int | None = None


_BEFORE: dict[Path, Before] = {}


def note(folder: Path, log_name: str):
    folder = Path(folder).resolve()
    parent = folder
    while not parent.exists():
        parent = parent.parent
    hydra = folder / ".hydra"
    log = folder / log_name
    _BEFORE[folder] = Before(existed=folder.is_dir() and any(folder.iterdir()), first_existing_parent=parent,
                             hydra_files={n: (hydra / n).read_bytes() for n in HYDRA_FILES if (hydra / n).is_file()},
                             log_size=log.stat().st_size if log.is_file() else None)


def undo_hydra_writes(folder: Path, log_name: str):
    """Remove (or restore) what Hydra wrote for this command, and nothing else: ``.hydra/`` and the log in a
    folder this command created, then the folder and the parents it made once they are empty. An existing
    folder gets its own ``.hydra/`` files and log back. Without a note (the guard not configured) the folder is
    treated as new, but only Hydra's files are removed, never anything else."""
    folder = Path(folder).resolve()
    before = _BEFORE.get(folder, Before(existed=False, first_existing_parent=folder.parent))
    hydra, log = folder / ".hydra", folder / log_name
    for name in HYDRA_FILES:
        if name in before.hydra_files:
            (hydra / name).write_bytes(before.hydra_files[name])
        else:
            (hydra / name).unlink(missing_ok=True)
    if before.log_size is None:
        log.unlink(missing_ok=True)
    elif log.is_file():
        with open(log, "r+b") as handle:
            handle.truncate(before.log_size)
    if before.existed:
        return
    for made in [folder / ".hydra", folder, *folder.parents]:
        if made == before.first_existing_parent or not made.is_relative_to(before.first_existing_parent):
            break
        try:
            made.rmdir()  # only if empty
        except OSError:
            break


class FolderGuard(Callback):
    """Notes each run folder before Hydra writes into it (configs/train.yaml's hydra.callbacks)."""

    def on_run_start(self, config, **kwargs):
        from hydra.core.hydra_config import HydraConfig
        HydraConfig.instance().set_config(config)  # for ${hydra:...} in the folder's name, as Hydra does next
        # ${now:...} is cached on this config, so the folder resolved here is the one Hydra makes
        note(Path(str(OmegaConf.select(config, "hydra.run.dir"))), f"{config.hydra.job.name}.log")

    def on_multirun_start(self, config, **kwargs):
        sweep = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        if sweep.is_dir():  # jobs write to <sweep>/<job>: note those already there
            for job in sweep.iterdir():
                if job.is_dir():
                    note(job, f"{config.hydra.job.name}.log")
