"""Gated linear attention on a CPU through the compiled DPLR kernel (ops/dplr_delta_rule/cpu.py): GLA's
transition diag(exp(g_t)) is the DPLR one with no low-rank part (a = b = 0), so the same per-step kernel runs it;
at a CPU's sizes it beats the chunked reference's many small matmuls. Gradients reach q, k, v, g and the initial
state (the kernel's a and b gradients are computed and dropped)."""
import torch

from ops.dplr_delta_rule import cpu_kernel_runs, dplr_delta_rule


def runs(backend: str, q: torch.Tensor) -> bool:
    """backend="auto" on CPU takes this path when the DPLR kernel builds here."""
    return cpu_kernel_runs(backend, q)


def gla_cpu(q, k, v, g, scale, initial_state, output_final_state: bool, seq_idx):
    """(o, final state) as ``gla_chunked`` returns them."""
    no_low_rank = torch.zeros_like(k)
    return dplr_delta_rule(q, k, v, no_low_rank, no_low_rank, g, scale, initial_state, output_final_state, seq_idx,
                           backend="auto")
