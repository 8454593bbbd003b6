"""Test a saved model once: ``python -m zoo.evaluate CHECKPOINT [--out DIR] [key=value ...]``.

Writes the same ``test_accuracy.json`` as training (and prints the same table), from the checkpoint's own
config; ``key=value`` settings change it (e.g. ``trainer.accelerator=gpu``, or other test slices with
``task.test_segments=[[128,32,1000]]``). ``python train.py eval=CHECKPOINT`` does the same through Hydra.
"""
import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf


def default_out(checkpoint: Path) -> Path:
    """<run folder>/eval_<checkpoint name> for a checkpoint inside a run folder, else beside the checkpoint."""
    from zoo.checkpoints import CHECKPOINT_DIR
    folder = checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINT_DIR else checkpoint.parent
    return folder / f"eval_{checkpoint.stem}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint",
                        help="a .ckpt written by python train.py, a run folder (its best checkpoint), or 'last'")
    parser.add_argument("--out", default=None, help="folder for the result (default <run folder>/eval_<name>)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="settings that replace the checkpoint's")
    args = parser.parse_intermixed_args(argv)
    from zoo.checkpoints import BEST
    from zoo.train import checkpoint_path, execute, prepare  # after argument parsing: --help answers at once

    try:
        bad = [o for o in args.overrides if "=" not in o]
        if bad:
            raise ValueError(f"settings are key=value, got {', '.join(map(repr, bad))}")
        cfg = OmegaConf.merge(OmegaConf.from_dotlist(args.overrides), {"eval": args.checkpoint, "resume": None})
        run = prepare(cfg, args.overrides)
        out = Path(args.out) if args.out else default_out(checkpoint_path(args.checkpoint, prefer=BEST))
        out.mkdir(parents=True, exist_ok=True)
        execute(run, out)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
