"""Several processes on a CPU (trainer=ddp_cpu: DDP over gloo): the batch samplers shard without repeats, the
per-slice metrics equal one process's on the same checkpoint, SIGTERM stops every process at the same step and
resume= goes on under DDP, and what cannot run several processes (the memory's sparse gradients, FSDP off CUDA)
fails in one line before training."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir

from tests.helpers import QUIET, ROOT
from zoo.tasks.data import SegmentBatchSampler
from zoo.train import prepare

# 256 train rows in batches of 16: 16 batches an epoch, 8 per process; odd-sized test slices (75 and 50 rows)
# split unevenly between the processes, where a padding sampler would count some rows twice
TINY = ["task.vocab_size=64", "task.train_segments=[[16,2,256]]", "task.test_segments=[[16,2,75],[32,4,50]]",
        "task.batch_size=16", "model.d_model=16", "optim.lr=1e-2"]
STEPS_PER_EPOCH = 8


def config(*overrides, task=TINY):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=[*task, *QUIET, *overrides])


@pytest.mark.parametrize("sizes,batch_size,processes", [([75, 50], 16, 2), ([7, 1, 33], 4, 3), ([5], 8, 2)])
def test_evaluation_batches_hold_each_example_once_over_the_processes(sizes, batch_size, processes):
    offsets = [0, *torch.tensor(sizes).cumsum(0).tolist()]
    seen = []
    for rank in range(processes):
        sampler = SegmentBatchSampler(offsets, batch_size, shuffle=False, num_replicas=processes, rank=rank)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert all(len(b) <= batch_size for b in batches)
        assert all(len({next(i for i in range(len(sizes)) if x < offsets[i + 1]) for x in b}) == 1 for b in batches)
        seen += [x for b in batches for x in b]
    assert sorted(seen) == list(range(offsets[-1])), "every example once, none twice"


def test_training_batches_split_into_equal_step_counts_covering_the_epoch():
    offsets, processes = [0, 100, 130], 3   # 7 + 2 batches of 16: 9 batches, 3 per process
    shards = [list(SegmentBatchSampler(offsets, 16, shuffle=True, seed=5, num_replicas=processes, rank=r))
              for r in range(processes)]
    whole = list(SegmentBatchSampler(offsets, 16, shuffle=True, seed=5))
    assert [len(s) for s in shards] == [3, 3, 3]
    assert sorted(map(tuple, (b for s in shards for b in s))) == sorted(map(tuple, whole))
    # 10 batches on 4 processes: 3 steps each, the epoch's first two batches repeated at its end
    offsets = [0, 160]
    shards = [SegmentBatchSampler(offsets, 16, shuffle=True, num_replicas=4, rank=r) for r in range(4)]
    assert [len(s) for s in shards] == [3] * 4 and all(len(list(s)) == 3 for s in shards)
    # resuming mid-epoch skips this process's batches already trained
    sampler = SegmentBatchSampler(offsets, 16, shuffle=True, num_replicas=4, rank=1)
    first = list(sampler)
    sampler.resume(0, 2)
    assert list(sampler) == first[2:]


def metrics_rows(run_folder: Path, prefix: str) -> dict:
    """The last logged value of each metric named prefix... in the run's newest CSV log."""
    newest = max(run_folder.glob("logs/*/metrics.csv"), key=lambda p: p.stat().st_mtime)
    values = {}
    for row in csv.DictReader(newest.open()):
        values.update({k: float(v) for k, v in row.items() if k.startswith(prefix) and v})
    return values


def train_py(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *TINY, *QUIET, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_ddp_on_cpu_stops_on_sigterm_resumes_and_reports_what_one_process_does(tmp_path):
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "trainer=ddp_cpu", *TINY, *QUIET,
                                "trainer.max_epochs=50"], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:  # both processes joined: training is about to start
            if "GLOBAL_RANK: 1" in line:
                break
        else:
            pytest.fail("the second process never started")
        time.sleep(3)
        process.send_signal(signal.SIGTERM)  # to process 0 only: the other one stops with it, at the same step
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: stopped by SIGTERM at step "), err
    saved = Path(errors[0].split("checkpoint saved to ")[1].split(";")[0])
    assert saved.is_file() and saved.name == "last.ckpt"
    run_folder = saved.parent.parent
    assert not (run_folder / "test_accuracy.json").exists(), "no result for an unfinished run"

    # resume under DDP to the end of the interrupted epoch
    epoch = torch.load(saved, map_location="cpu", weights_only=False)["epoch"]
    done = train_py("trainer=ddp_cpu", f"resume={saved}", f"trainer.max_epochs={epoch + 1}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads((run_folder / "test_accuracy.json").read_text())
    assert result["global_step"] == STEPS_PER_EPOCH * (epoch + 1), "each process took half of every epoch"
    assert result["tested"].endswith("best.ckpt")
    assert sorted(p.name for p in (run_folder / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    ddp_test_loss = metrics_rows(run_folder, "test/loss/")

    # one process on the same checkpoint and the same split: the same accuracies, the same mean losses
    best = run_folder / "checkpoints" / "best.ckpt"
    single = train_py("trainer=cpu", f"eval={best}", cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    evaluated = json.loads(next(tmp_path.glob("outputs/*/*/test_accuracy.json")).read_text())
    assert [s["accuracy"] for s in evaluated["slices"]] == [s["accuracy"] for s in result["slices"]]
    assert 0 < result["mean_accuracy"] < 1
    single_test_loss = metrics_rows(next(tmp_path.glob("outputs/*/*/logs")).parent, "test/loss/")
    assert set(single_test_loss) == set(ddp_test_loss) == {"test/loss/L16_kv2", "test/loss/L32_kv4"}
    assert single_test_loss == pytest.approx(ddp_test_loss, rel=1e-5)

    # the best checkpoint: the validation score DDP chose it by is one process's validation of it
    run = prepare(config(f"eval={best}"))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.validate(run.lit, datamodule=run.datamodule, verbose=False)
    validated = sum(run.lit.val_results.values()) / len(run.lit.val_results)
    assert result["validation"]["best"] == pytest.approx(validated, abs=1e-6)


def test_the_memory_bank_under_ddp_fails_in_one_line_before_training():
    with pytest.raises(ValueError, match="sparse gradients.*one process"):
        prepare(config("trainer=ddp_cpu", "experiment=hpm_compare", task=["task.num_documents=100"]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a CUDA GPU trainer=fsdp is allowed")
def test_fsdp_without_a_cuda_gpu_says_where_it_runs():
    for overrides in (["trainer=fsdp"], ["trainer=fsdp", "trainer.accelerator=cpu"]):
        with pytest.raises(ValueError, match="trainer=fsdp runs on CUDA GPUs only.*use trainer=ddp_cpu"):
            prepare(config(*overrides))


def test_a_nan_loss_on_one_process_stops_every_process_at_that_step(tmp_path):
    """Only the last process's loss is NaN (tests/nan_loss_at_step.py): all stop together at step 3, none waits
    for the others, the weights stay finite and the result records the step."""
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), "trainer=ddp_cpu", *TINY, *QUIET,
                           "imports=[tests.nan_loss_at_step]", "trainer.max_epochs=2", "hydra.run.dir=run"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "warning: the training loss was not finite on some process at step 3: training stopped there" in done.stderr
    result = json.loads((tmp_path / "run" / "test_accuracy.json").read_text())
    assert result["diverged_at_step"] == 3 and result["global_step"] == 4
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(w.isfinite().all() for w in last.values() if w.is_floating_point()), "no NaN reached the weights"
