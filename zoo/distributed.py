"""What a multi-process run (trainer=ddp, ddp_cpu, fsdp) cannot do, said in one line before anything starts
(``check_strategy``, ``check_sparse_gradients``; train.py calls both while it checks the config).

Verified on a CPU (docs/distributed.md, tests/test_ddp.py): DDP over gloo with per-slice metrics equal to one
process's, the best checkpoint, SIGTERM and resume. Refused: the memory bank's sparse gradients under DDP (torch's
gradient reducer cannot read sparse tensors: "Cannot access storage of SparseTensorImpl"), and FSDP off CUDA GPUs
(Lightning's FSDP strategy refuses accelerator=cpu).
"""
import torch
from torch import nn

from zoo.sparse_adam import sparse_parameters

MULTI_PROCESS_STRATEGIES = ("ddp", "fsdp", "deepspeed")


def is_multi_process(trainer_options: dict) -> bool:
    strategy = str(trainer_options.get("strategy") or "auto")
    devices, nodes = trainer_options.get("devices", 1), trainer_options.get("num_nodes", 1)
    return (strategy.startswith(MULTI_PROCESS_STRATEGIES) or (isinstance(devices, int) and devices > 1)
            or (isinstance(nodes, int) and nodes > 1))


def check_strategy(trainer_options: dict):
    """ValueError (one line) for a strategy that cannot run on this machine (before the accelerator's own check,
    so that trainer=fsdp on a CPU says where it runs)."""
    if str(trainer_options.get("strategy") or "auto").startswith("fsdp"):
        if str(trainer_options.get("accelerator", "auto")) == "cpu" or not torch.cuda.is_available():
            seen = "accelerator=cpu" if torch.cuda.is_available() else "no CUDA GPU"
            raise ValueError(f"trainer=fsdp runs on CUDA GPUs only (Lightning's FSDP strategy needs them; here: "
                             f"{seen}); on a CPU use trainer=ddp_cpu")


def check_sparse_gradients(trainer_options: dict, model: nn.Module):
    """ValueError (one line) when a model with sparse gradients (a memory bank) would train in several processes."""
    if is_multi_process(trainer_options) and sparse_parameters(model):
        raise ValueError("the memory bank (model.mlp=hpm) has sparse gradients, which DDP/FSDP cannot reduce "
                         "across processes; train it in one process (trainer=cpu or trainer=gpu)")
