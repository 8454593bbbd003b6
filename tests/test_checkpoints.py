"""Checkpoints: on by default, loadable from a path alone (zoo.checkpoints.load_model, LitLM.load_from_checkpoint),
and a run killed mid-epoch resumes to the same step and the same weights as one never stopped."""
import json
import os
import signal

import lightning as L
import pytest
import torch

from tests.helpers import tiny_config as config
from zoo.checkpoints import load_model
from zoo.interrupt import RunInterrupted
from zoo.lit import LitLM
from zoo.tasks import build_task
from zoo.train import train




@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return out, train(config(), out)


def test_checkpoints_are_on_by_default_and_the_best_one_is_tested(trained):
    out, result = trained
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "checkpoints" / "best.ckpt").is_file()
    assert result["tested"].endswith("best.ckpt")
    assert result["validation"]["monitor"] == "val/acc" and result["validation"]["best"] is not None
    assert json.loads((out / "test_accuracy.json").read_text())["slices"] == result["slices"]


def test_load_model_from_a_path_alone_reproduces_the_test_accuracy(trained):
    out, result = trained
    model, run_config = load_model(out / "checkpoints" / "best.ckpt")
    assert not model.training and run_config["model"]["d_model"] == 16 and run_config["task"]["vocab_size"] == 64
    task = dict(run_config["task"])
    datamodule = build_task(task.pop("name"), **task)
    datamodule.setup("test")
    for row, loader in zip(result["slices"], datamodule.test_dataloader()):
        hits = total = 0
        with torch.no_grad():
            for batch in loader:
                scored = batch["labels"] != -100
                predicted = model(batch["input_ids"]).argmax(-1)
                hits += (predicted[scored] == batch["labels"][scored]).sum().item()
                total += scored.sum().item()
        assert hits / total == pytest.approx(row["accuracy"], abs=1e-6), row["slice"]


def test_lit_load_from_checkpoint_needs_only_the_path(trained):
    out, result = trained
    lit = LitLM.load_from_checkpoint(out / "checkpoints" / "best.ckpt")
    task = dict(lit.hparams.run_config["task"])
    datamodule = build_task(task.pop("name"), **task)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(lit, datamodule=datamodule, verbose=False)
    assert lit.test_results == {row["slice"]: pytest.approx(row["accuracy"], abs=1e-6) for row in result["slices"]}


def test_a_run_killed_mid_epoch_resumes_to_the_same_step_and_weights(trained, tmp_path):
    """SIGTERM at step 11 (3 batches into epoch 2): a checkpoint, then resume=PATH ends exactly like the
    uninterrupted run of the fixture (same seed, same config)."""
    out, result = trained

    class KillAtStep11(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 11:
                os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(RunInterrupted) as stopped:
        train(config(), tmp_path / "killed", callbacks=[KillAtStep11()])
    assert stopped.value.exit_code == 128 + signal.SIGTERM and stopped.value.checkpoint.is_file()
    assert 11 <= stopped.value.step < 16
    resumed = train(config(f"resume={stopped.value.checkpoint}"), tmp_path / "unused")
    assert not (tmp_path / "unused").exists(), "a resumed run goes on in its own folder"
    assert resumed["global_step"] == result["global_step"] == 16
    expected = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    got = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert got["global_step"] == expected["global_step"]
    for name, weight in expected["state_dict"].items():
        assert torch.equal(got["state_dict"][name], weight), name
    assert resumed["slices"] == result["slices"] and resumed["validation"] == result["validation"]
