"""A user's mistakes get one line (exit 2, no traceback, no folder left), and a failed command never touches an
existing run folder. docs/training.md lists these errors."""
import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT, TINY
from zoo.run_folder import model_name

QUIET_CLI = ["+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false", "print_test_table=false"]


def train_py(*args, cwd, prelude=""):
    """python train.py ARGS in cwd; prelude runs first in the same process (e.g. to hide a package)."""
    code = "\n".join(["import sys, runpy", prelude, "sys.argv = ['train.py', *sys.argv[1:]]",
                      f"runpy.run_path({str(ROOT / 'train.py')!r}, run_name='__main__')"])
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=240)


def assert_one_line(done, *named: str):
    assert done.returncode == 2, done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr + done.stdout and "Epoch" not in done.stdout
    for text in named:
        assert text in lines[0], lines[0]


def tree(folder):
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


@pytest.fixture
def bad_files(tmp_path):
    """notes.txt (not a checkpoint) and cut.ckpt (a torch file cut short), in an otherwise empty folder."""
    (tmp_path / "notes.txt").write_text("my notes\n")
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, tmp_path / "whole.ckpt")
    data = (tmp_path / "whole.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[:len(data) // 2])
    (tmp_path / "whole.ckpt").unlink()
    (tmp_path / "empty_folder").mkdir()
    return tmp_path


def test_a_failed_command_leaves_an_existing_run_folder_as_it_was_and_eval_of_it_writes_inside(tmp_path):
    """The data loss of issue 23: train into RUN, then a command that fails its checks into RUN removed RUN."""
    trained = train_py(*TINY, *QUIET_CLI, "hydra.run.dir=RUN", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    before = tree(tmp_path / "RUN")
    assert "checkpoints/best.ckpt" in before and "test_accuracy.json" in before
    failed = train_py(*TINY, *QUIET_CLI, "+model.layers.1.num_head=2", "hydra.run.dir=RUN", cwd=tmp_path)
    assert_one_line(failed, "num_head")
    assert tree(tmp_path / "RUN") == before, "the run folder, its .hydra/ and log are as they were"
    # eval= of a run folder: its best checkpoint, written where python -m zoo.evaluate writes
    evaluated = train_py(*QUIET_CLI, "eval=RUN", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert (tmp_path / "RUN" / "eval_best" / "test_accuracy.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["RUN"], "no other folder"


@pytest.mark.parametrize("args,named", [
    (["eval=notes.txt"], ["'notes.txt' is not a readable checkpoint", "expected a .ckpt file"]),
    (["eval=cut.ckpt"], ["'cut.ckpt' is not a readable checkpoint"]),
    (["resume=cut.ckpt"], ["'cut.ckpt' is not a readable checkpoint"]),
    (["eval=empty_folder"], ["'empty_folder' is a folder without checkpoints/best.ckpt or checkpoints/last.ckpt"]),
    (["trainer.max_epochs=abc"], ["trainer.max_epochs must be an integer or null, got 'abc'"]),
    (["model.mlp=hpm"], ["model.mlp=hpm reads memory_path", "task 'mqar' does not supply", "task=facts"]),
    (["model=mamaba"], ["model=mamaba is not a config in configs/model/", "conv_attention, conv_based"]),
    (["task=facts", "task.num_documents=50"], ["needs the scikit-learn package: pip install 'zoo[memory]'"]),
    (["experiment=hpm_compare", "+model.memory_layers=[2]"],
     ["memory_layers entry 2 is not a distinct layer index in [0, 1] (n_layers=2)"]),
    (["task=text", "task.tokenizer=bpe"], ["needs the tokenizers package: pip install 'zoo[text]'"]),
], ids=["eval-text-file", "eval-truncated", "resume-truncated", "eval-empty-folder", "max-epochs-abc",
        "hpm-without-paths", "misspelled-option", "no-scikit-learn", "memory-layer-out-of-range",
        "no-tokenizers"])
def test_train_py_mistakes_get_one_line_and_leave_no_folder(bad_files, args, named):
    hidden = [name for name, needed in (("sklearn", "task=facts"), ("tokenizers", "task.tokenizer=bpe"))
              if needed in args]
    before = sorted(p.name for p in bad_files.iterdir())
    done = train_py(*args, cwd=bad_files, prelude="\n".join(f"sys.modules[{m!r}] = None" for m in hidden))
    assert_one_line(done, *named)
    assert sorted(p.name for p in bad_files.iterdir()) == before, "no output folder is left behind"


@pytest.mark.parametrize("name", ["notes.txt", "cut.ckpt"])
def test_evaluate_sample_and_load_model_name_an_unreadable_checkpoint(bad_files, name, capsys, monkeypatch):
    from zoo.checkpoints import load_model
    from zoo.evaluate import main as evaluate
    from zoo.sample import main as sample

    monkeypatch.chdir(bad_files)
    with pytest.raises(ValueError, match=f"'{name}' is not a readable checkpoint .*expected a .ckpt file"):
        load_model(name)
    assert evaluate([name]) == 2
    with pytest.raises(SystemExit) as stop:
        sample(["--checkpoint", name])
    assert stop.value.code == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith(f"error: '{name}' is not a readable") for line in errors)
    assert not (bad_files / f"eval_{name.split('.')[0]}").exists(), "zoo.evaluate made no folder"


def test_run_folders_are_named_after_the_model_that_runs():
    conv_attention = [{"name": "short_conv", "kernel_size": 3}, {"name": "attention", "num_heads": 1}]
    assert model_name("conv_attention", conv_attention, None) == "conv_attention"
    assert model_name("conv_attention", [{"name": "short_conv"}, {"name": "mamba"}], None) == "short_conv+mamba"
    assert model_name("conv_attention", conv_attention, {"name": "hpm", "levels": 2}) == "conv_attention_hpm"


def test_checkpoint_path_finds_a_run_folders_checkpoint(tmp_path):
    from zoo.train import checkpoint_path
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.ckpt").write_bytes(b"")
    assert checkpoint_path(tmp_path / "run", prefer="best.ckpt") == checkpoints / "last.ckpt"  # the one there
    (checkpoints / "best.ckpt").write_bytes(b"")
    assert checkpoint_path(tmp_path / "run", prefer="best.ckpt") == checkpoints / "best.ckpt"
    assert checkpoint_path(checkpoints) == checkpoints / "last.ckpt"                       # resume prefers last


def test_an_unwritable_bpe_cache_folder_fails_in_one_line_naming_it(tmp_path):
    pytest.importorskip("tokenizers")
    from zoo.tasks import build_task
    (tmp_path / "corpus.txt").write_text("hello world, hello text.\n" * 200)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match="cannot write the BPE tokenizer cache .*a_file.*set task.cache_dir"):
        build_task("text", path=str(tmp_path / "corpus.txt"), tokenizer="bpe", bpe_vocab_size=300, seq_len=16,
                   cache_dir=str(tmp_path / "a_file" / "cache"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "corpus.txt"]
