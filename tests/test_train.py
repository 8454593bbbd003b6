"""Training end to end: config composition, the Lightning loop, the per-slice report, and CLI errors."""
import json
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.helpers import QUIET, ROOT
from zoo.lit import parameter_groups, warmup_cosine
from zoo.model import LM
from zoo.train import train



def config(overrides):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=overrides + QUIET)


def test_every_model_config_builds_and_runs_a_step(tmp_path):
    """Each configs/model/*.yaml trains one batch and writes a per-slice report."""
    for path in sorted((ROOT / "configs" / "model").glob("*.yaml")):
        cfg = config([f"model={path.stem}", "task.train_segments=[[32,4,64]]", "task.test_segments=[[32,4,16],[32,8,16]]",
                      "task.batch_size=32", "trainer.max_epochs=1", "+trainer.limit_train_batches=1", "model.d_model=32"])
        out = tmp_path / path.stem
        result = train(cfg, out)
        report = json.loads((out / "test_accuracy.json").read_text())
        assert [s["slice"] for s in report["slices"]] == ["L32_kv4", "L32_kv8"]
        assert all(0.0 <= s["accuracy"] <= 1.0 for s in report["slices"])
        assert report["num_parameters"] == result["num_parameters"] > 0
        assert list((out / "logs").rglob("metrics.csv")), "CSV logs are written"


@pytest.mark.parametrize("feature_dim,window", [(16, 64), (8, 64), (16, 32), (4, 16)])
def test_based_knobs_from_the_command_line_set_the_state_size(feature_dim, window):
    """`model=based model.layers.1.feature_dim=F model.layers.2.window=W`: the state follows the closed forms."""
    cfg = config(["model=based", f"model.layers.1.feature_dim={feature_dim}", f"model.layers.2.window={window}"])
    model = LM(vocab_size=64, **OmegaConf.to_container(cfg.model, resolve=True))
    d = cfg.model.d_model                                            # one linear-attention head of width d
    conv = d * (3 - 1)                                               # short_conv, kernel 3
    taylor = (1 + feature_dim + feature_dim * (feature_dim + 1) // 2) * (d + 1)
    for length in (10, 100, 1000):
        window_kv = 2 * d * min(length, window)
        assert model.state_size(length) == conv + taylor + window_kv, (feature_dim, window, length)


def test_the_default_model_learns_recall(tmp_path):
    """A small MQAR that attention must solve: accuracy far above the chance level of 1/64."""
    cfg = config(["task.vocab_size=128", "task.train_segments=[[32,4,6000]]", "task.test_segments=[[32,4,256]]",
                  "trainer.max_epochs=3", "optim.lr=3e-3"])
    result = train(cfg, tmp_path)
    assert result["slices"][0]["accuracy"] > 0.9


def test_parameter_groups_exempt_norms_biases_embeddings_and_marked_parameters():
    model = LM(50, d_model=16, n_layers=1, layers=["attention"], mlp={"name": "gelu"})
    model.layers[0].mlp.up_proj.weight._no_weight_decay = True
    decay, no_decay = parameter_groups(model, 0.1)
    decay_ids, no_decay_ids = {id(p) for p in decay["params"]}, {id(p) for p in no_decay["params"]}
    assert id(model.embedding.weight) in no_decay_ids
    assert id(model.final_norm.weight) in no_decay_ids
    assert id(model.layers[0].mlp.up_proj.bias) in no_decay_ids
    assert id(model.layers[0].mlp.up_proj.weight) in no_decay_ids
    assert id(model.layers[0].mixer.qkv_proj.weight) in decay_ids
    assert len(decay_ids) + len(no_decay_ids) == len({id(p) for p in model.parameters()})


def test_warmup_then_cosine():
    lrs = [warmup_cosine(step, 100, 10, 0.01) for step in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])), "decays monotonically after warmup"
    assert lrs[-1] == pytest.approx(0.01, abs=1e-3)


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=180)


def test_unknown_model_lists_the_known_ones():
    done = run_cli("model=nope")
    assert done.returncode == 2
    assert "model=nope is not a config in configs/model/" in done.stderr and "conv_attention" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_impossible_mqar_config_names_the_constraint():
    done = run_cli("task.test_segments=[[64,40,10]]")
    assert done.returncode == 2
    assert "4 * num_kv_pairs <= input_seq_len" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize("override,message", [
    ("+model.layers.1.num_head=2",
     "mixer 'attention': unknown hyperparameter 'num_head'; accepted: backend, num_heads, window"),
    ("+model.dmodel=64", "model: unknown setting 'dmodel'; accepted: d_model, n_layers, layers"),
    ("trainer=gpu", "trainer=gpu needs a CUDA GPU and torch sees none on this machine; use trainer=cpu"),
    ("optim.lr=-1", "optim.lr must be a positive number, got -1"),
    ("+optim.momentum=0.9", "optim: unknown setting 'momentum'; accepted: lr, weight_decay, betas"),
    ("+trainer.logger=true", "trainer.logger is set by train.py: choose it with logger=csv|tensorboard|wandb|none"),
    ("imports=[no_such_module]", "imports: cannot import 'no_such_module'"),
    ("resume=missing.ckpt", "checkpoint 'missing.ckpt' does not exist"),
])
def test_bad_settings_fail_in_one_line_before_training_and_leave_no_folder(tmp_path, override, message):
    """Every bad setting is caught before the Trainer starts: exit 2, one line naming it and what is allowed."""
    done = run_cli(override, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"error: {done.stderr.strip()[7:]}"], "exactly one line"
    assert message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout and "Epoch" not in done.stdout
    assert not list(tmp_path.iterdir()), "no output folder is left behind"


def test_a_missing_logger_package_fails_in_one_line(tmp_path, monkeypatch):
    import importlib.util
    from zoo.train import logger_class
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("tensorboard", "tensorboardX",
                                                                                      "wandb") else real(name, *a))
    for name in ("tensorboard", "wandb"):
        with pytest.raises(ValueError, match=f"logger={name} needs the {name} package: pip install 'zoo\\[{name}\\]'"):
            logger_class({"name": name})
    with pytest.raises(ValueError, match="logger='mlflow' is not one of 'csv', 'tensorboard', 'wandb', 'none'"):
        logger_class({"name": "mlflow"})


def test_optimiser_settings_are_checked_before_training():
    from zoo.lit import check_optim_settings
    good = dict(lr=1e-3, weight_decay=0.1, betas=(0.9, 0.98), warmup_fraction=0.1, min_lr_ratio=0.01)
    check_optim_settings(**good)
    for key, value, message in (("lr", 0, "optim.lr must be a positive number"),
                                ("weight_decay", -0.1, "optim.weight_decay must be a number >= 0"),
                                ("betas", (0.9, 1.5), "optim.betas must be two numbers in \\[0, 1\\)"),
                                ("betas", (0.9,), "optim.betas must be two numbers"),
                                ("warmup_fraction", 1.5, "optim.warmup_fraction must be in \\[0, 1\\]"),
                                ("min_lr_ratio", float("nan"), "optim.min_lr_ratio must be in \\[0, 1\\]")):
        with pytest.raises(ValueError, match=message):
            check_optim_settings(**{**good, key: value})


def test_an_unknown_top_level_setting_is_not_silently_ignored():
    from zoo.train import prepare
    with pytest.raises(ValueError, match="unknown top-level setting 'ckpt_path'; known: checkpoint, .*resume=PATH"):
        prepare(config(["+ckpt_path=outputs/x.ckpt"]))


def test_a_loss_that_is_not_finite_stops_training_and_keeps_the_weights_before_it(tmp_path, monkeypatch, capsys):
    """Training never goes on with NaN weights: the step whose loss is NaN is skipped, training stops there with
    one line, the test runs on finite weights and the result records the step."""
    from zoo.lit import LitLM
    loss_of = LitLM._loss

    seen = []

    def nan_at_step_3(self, batch):
        seen.append(self)
        loss, logits = loss_of(self, batch)
        return (loss * float("nan") if self.training and self.global_step == 3 else loss), logits

    monkeypatch.setattr(LitLM, "_loss", nan_at_step_3)
    cfg = config(["task.train_segments=[[32,4,256]]", "task.test_segments=[[32,4,32]]", "task.batch_size=32",
                  "trainer.max_epochs=1", "model.d_model=32", "checkpoint=false"])
    result = train(cfg, tmp_path)
    # the loop counts the skipped step too; training went no further
    assert result["diverged_at_step"] == 3 and result["global_step"] == 4
    assert all(p.isfinite().all() for p in seen[-1].model.parameters()), "no update from the NaN step"
    assert 0.0 <= result["mean_accuracy"] <= 1.0
    assert "warning: the training loss became nan at step 3: training stopped there" in capsys.readouterr().err
    saved = json.loads((tmp_path / "test_accuracy.json").read_text())
    assert saved["diverged_at_step"] == 3


def test_a_finite_run_records_no_divergence(tmp_path):
    cfg = config(["task.train_segments=[[32,4,64]]", "task.test_segments=[[32,4,16]]", "task.batch_size=32",
                  "trainer.max_epochs=1", "model.d_model=32", "checkpoint=false"])
    assert train(cfg, tmp_path)["diverged_at_step"] is None
