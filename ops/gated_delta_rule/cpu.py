"""The delta rule and the gated delta rule on a CPU through the compiled DPLR kernel (ops/dplr_delta_rule/cpu.py).

Both transitions are diagonal plus rank one:

    exp(g_t) (I - beta_t k_t^T k_t) = diag(exp(g_t)) + k_t^T (-exp(g_t) beta_t k_t),

so ``dplr_delta_rule`` with gk = g on every key channel, b = k, a = -exp(g) beta k and the written key beta k
computes them exactly; its per-step kernel beats the chunked WY reference (many small matmuls) at a CPU's sizes.
Gradients reach q, k, v, g, beta and the initial state through autograd around the kernel.
"""
import torch

from ops.dplr_delta_rule import cpu_kernel_runs, dplr_delta_rule


def runs(backend: str, q: torch.Tensor) -> bool:
    """backend="auto" on CPU takes this path when the DPLR kernel builds here."""
    return cpu_kernel_runs(backend, q)


def gated_delta_rule_cpu(q, k, v, g, beta, scale: float, initial_state, output_final_state: bool, seq_idx):
    """(o, final state) as ``gated_delta_rule_chunked`` returns them; g None is the delta rule (no decay)."""
    written = beta[..., None] * k
    if g is None:
        gk, a = torch.zeros_like(k), -written
    else:
        gk, a = g[..., None].expand_as(k), -(g.exp()[..., None] * written)
    return dplr_delta_rule(q, written, v, a, k, gk, scale, initial_state, output_final_state, seq_idx,
                           backend="auto")
