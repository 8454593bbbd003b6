"""The research loop through the command line: SIGTERM saves and exits non-zero, resume=last goes on, eval and
python -m zoo.evaluate write the training's result JSON, imports=[...] trains a mixer from outside the package,
and a multirun leaves one table of its jobs."""
import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from tests.helpers import ROOT, TINY, tiny_config as config
from zoo.evaluate import main as evaluate_main
from zoo.train import train

QUIET_CLI = ["+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false", "print_test_table=false"]


def cli(*args, cwd, env=None, flags=(), timeout=240):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *flags, *TINY, *QUIET_CLI, *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_sigterm_saves_a_checkpoint_says_where_and_exits_non_zero_then_resume_last_goes_on(tmp_path):
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *TINY, *QUIET_CLI, "trainer.max_epochs=500"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # "run folder ...": signal handling is in place from here on
        assert line.startswith("run folder"), line + process.stderr.read()
        time.sleep(2)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: stopped by SIGTERM at step "), err
    saved = lines[0].split("checkpoint saved to ")[1].split(";")[0]
    assert os.path.isfile(saved) and saved.endswith("checkpoints/last.ckpt")
    assert "continue with: python train.py resume=" in lines[0]
    run_folder = os.path.dirname(os.path.dirname(saved))
    assert not os.path.exists(os.path.join(run_folder, "test_accuracy.json")), "no result for an unfinished run"

    # a command-line setting wins over the checkpoint's: finish at the end of the epoch the signal interrupted
    # (which epoch that is depends on the machine's speed, so it is read from the checkpoint)
    epoch = torch.load(saved, map_location="cpu", weights_only=False)["epoch"]
    done = cli("resume=last", f"trainer.max_epochs={epoch + 1}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(open(os.path.join(run_folder, "test_accuracy.json")).read())
    assert result["global_step"] == 8 * (epoch + 1) and result["tested"].endswith("best.ckpt")


def test_eval_and_zoo_evaluate_write_the_training_result_again(tmp_path):
    trained = train(config(), tmp_path / "run")
    best = tmp_path / "run" / "checkpoints" / "best.ckpt"
    evaluated = train(config(f"eval={best}"), tmp_path / "eval")
    assert evaluated["slices"] == trained["slices"] and evaluated["num_parameters"] == trained["num_parameters"]
    assert json.loads((tmp_path / "eval" / "test_accuracy.json").read_text())["slices"] == trained["slices"]
    assert not (tmp_path / "eval" / "checkpoints").exists(), "evaluating trains nothing and saves nothing"

    assert evaluate_main([str(best)]) == 0
    again = json.loads((tmp_path / "run" / "eval_best" / "test_accuracy.json").read_text())
    assert again["slices"] == trained["slices"] and set(again) == set(trained)
    # another test slice through a setting
    assert evaluate_main([str(best), "--out", str(tmp_path / "other"), "task.test_segments=[[32,4,64]]"]) == 0
    other = json.loads((tmp_path / "other" / "test_accuracy.json").read_text())
    assert [s["slice"] for s in other["slices"]] == ["L32_kv4"]
    assert other["slices"][0]["accuracy"] == trained["slices"][1]["accuracy"], "same test draw for that slice"
    assert evaluate_main([str(tmp_path / "nope.ckpt")]) == 2


CUMAVG = textwrap.dedent('''
    """A mixer that lives outside the zoo package: y_t = out_proj(mean of x_1..x_t)."""
    import torch
    from torch import nn

    from zoo.blocks import Cache, Mixer, register_mixer


    @register_mixer("cumavg")
    class CumulativeAverage(Mixer):
        backends = ("auto", "reference")

        def __init__(self, d_model, layer_idx=0, backend="auto", scale: float = 1.0):
            super().__init__(d_model, layer_idx, backend)
            self.scale = scale
            self.out_proj = nn.Linear(d_model, d_model)

        def forward(self, x, cache=None):
            total, start = x.cumsum(1), 0
            if cache is not None:
                total, start = total + cache["sum"][:, None], cache.seen
                cache["sum"], cache.seen = total[:, -1], cache.seen + x.shape[1]
            count = torch.arange(start + 1, start + x.shape[1] + 1, device=x.device, dtype=x.dtype)[:, None]
            return self.out_proj(self.scale * total / count)

        def allocate_cache(self, batch_size, device=None, dtype=None):
            return Cache(sum=torch.zeros(batch_size, self.d_model, device=device, dtype=dtype))

        def state_size(self, seq_len):
            return self.d_model
''')


def test_a_mixer_from_a_module_outside_the_package_trains_through_train_py(tmp_path):
    package = tmp_path / "src" / "my_blocks"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "mixers.py").write_text(CUMAVG)
    (tmp_path / "work").mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}
    layers = "model.layers=[{name:short_conv},{name:cumavg,scale:0.5}]"
    unknown = cli(layers, cwd=tmp_path / "work", env=env)
    assert unknown.returncode == 2 and "unknown mixer 'cumavg'" in unknown.stderr
    done = cli("imports=[my_blocks.mixers]", layers, "trainer.max_epochs=1", cwd=tmp_path / "work", env=env)
    assert done.returncode == 0, done.stderr
    (result_file,) = (tmp_path / "work" / "outputs").glob("*/*/test_accuracy.json")
    result = json.loads(result_file.read_text())
    assert result["model"]["layers"][1] == {"name": "cumavg", "scale": 0.5}
    assert result["slices"][0]["state_size"] == 16 * 2 + 16  # short_conv (kernel 3) + the running sum
    # the checkpoint names the import: a fresh process loads it from the path alone
    load = subprocess.run([sys.executable, "-c", "import sys; from zoo.checkpoints import load_model; "
                           "m, c = load_model(sys.argv[1]); print(type(m.layers[1].mixer).__name__, c['imports'])",
                           str(result_file.parent / "checkpoints" / "last.ckpt")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert load.stdout.strip() == "CumulativeAverage ['my_blocks.mixers']", load.stderr


def test_a_multirun_leaves_one_table_of_its_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    done = cli("trainer.max_epochs=1", "optim.lr=1e-3,3e-3", f"hydra.sweep.dir={sweep}", flags=["-m"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with open(sweep / "sweep.csv") as handle:
        rows = list(csv.DictReader(handle))
    swept = [[o for o in row["overrides"].split() if o.startswith("optim.lr=")] for row in rows]
    assert swept == [["optim.lr=0.001"], ["optim.lr=0.003"]]
    for row in rows:
        job = sweep / row["job"]
        result = json.loads((job / "test_accuracy.json").read_text())
        assert row["status"] == "done"
        assert float(row["mean_accuracy"]) == pytest.approx(result["mean_accuracy"])
        assert float(row["acc_L32_kv4"]) == pytest.approx(result["slices"][1]["accuracy"])
        assert int(row["state_size"]) == max(s["state_size"] for s in result["slices"])
    table = (sweep / "sweep.md").read_text().splitlines()
    assert table[0].startswith("| job | overrides | status |") and len(table) == 2 + len(rows)
