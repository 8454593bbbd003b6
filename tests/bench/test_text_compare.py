"""experiment=text_compare: one token budget for every model, and the report built from the sweep's jobs."""
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tests.helpers import write_documents
from zoo.bench.text_compare import COLUMNS, write_report
from zoo.train import train

ROOT = Path(__file__).resolve().parents[2]


def compose_train(overrides):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=False)


@pytest.mark.parametrize("experiment", ["text_compare", "co4_text"])
def test_the_preset_trains_every_model_on_text_for_the_same_steps(experiment):
    cfg = compose_train([f"experiment={experiment}"])
    assert cfg.task.name == "text" and cfg.trainer.max_steps > 0 and cfg.trainer.max_epochs == -1
    preset = (ROOT / "configs" / "experiment" / f"{experiment}.yaml").read_text()
    models = next(line for line in preset.splitlines() if line.strip().startswith("model:") and "," in line)
    for model in models.split(":", 1)[1].strip().split(","):
        assert (ROOT / "configs" / "model" / f"{model}.yaml").exists(), model
        composed = compose_train([f"experiment={experiment}", f"model={model}"])
        assert composed.model.d_model == 64 and composed.trainer.max_steps == cfg.trainer.max_steps


def test_the_report_has_one_row_per_finished_job(tmp_path):
    write_documents(tmp_path / "corpus", 25)
    for index, model in enumerate(["short_conv", "conv_attention"]):
        job = tmp_path / "sweep" / f"{index}_model={model}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- experiment=text_compare\n- model={model}\n")
        cfg = compose_train(["experiment=text_compare", f"model={model}", f"task.path={tmp_path / 'corpus'}",
                             "task.seq_len=32", "task.batch_size=8", "model.d_model=16", "trainer.max_steps=6",
                             "trainer.val_check_interval=3", "trainer.log_every_n_steps=1",
                             "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false"])
        train(cfg, job)
    (tmp_path / "sweep" / "2_model=mamba" / ".hydra").mkdir(parents=True)   # a job that did not finish
    rows = write_report(tmp_path / "sweep")
    assert [r["model"] for r in rows] == ["short_conv", "conv_attention"]
    for row in rows:
        assert row["tokens_trained"] == 6 * 8 * 32
        assert row["train_tokens_per_s"] > 0 and 0 < row["val_bpb"] < 9 and 0 < row["test_bpb"] < 9
    assert rows[0]["state_size"] < rows[1]["state_size"]     # attention keeps its KV cache
    for suffix in ("json", "csv", "md", "png"):
        assert (tmp_path / "sweep" / f"text_compare.{suffix}").stat().st_size > 0
    saved = json.loads((tmp_path / "sweep" / "text_compare.json").read_text())["rows"]
    assert [r["model"] for r in saved] == ["short_conv", "conv_attention"]
    assert all(c in saved[0] for c in COLUMNS)


def test_the_bench_command_runs_the_comparison_through_the_sweep_engine_and_resumes(tmp_path, capsys):
    from zoo.bench.__main__ import main
    write_documents(tmp_path / "corpus", 25)
    command = ["text", "--models", "short_conv,conv_attention", "--out", str(tmp_path / "out"), "--workers", "1",
               f"task.path={tmp_path / 'corpus'}", "task.seq_len=32", "task.batch_size=8", "model.d_model=16",
               "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.log_every_n_steps=1"]
    assert main(command) == 0
    saved = json.loads((tmp_path / "out" / "text_compare.json").read_text())["rows"]
    assert sorted(r["model"] for r in saved) == ["conv_attention", "short_conv"]
    assert all(r["tokens_trained"] == 4 * 8 * 32 for r in saved)
    assert len(list((tmp_path / "out" / "runs").glob("*.json"))) == 2
    capsys.readouterr()
    assert main(command) == 0  # every result file is there: nothing trains again
    assert "2 runs, 2 already done" in capsys.readouterr().out
