"""Adapter to mamba-ssm's Triton SSD kernels (optional package, imported only when this runs on a CUDA device)."""
import torch


def ssd_mamba_ssm(x, dt, A, B, C, chunk_size, D, z, dt_bias, dt_softplus, dt_limit, initial_states, seq_idx,
                  return_final_states):
    """``ops.ssd`` on mamba-ssm's ``mamba_chunk_scan_combined``.

    mamba-ssm lets the initial state continue into document 0 of a packed row; ours continues into the row's
    first document, whatever its id: the ids are shifted so that each row starts at 0 (int32, as the kernel reads).
    """
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    if seq_idx is not None:
        seq_idx = (seq_idx - seq_idx[:, :1]).to(torch.int32).contiguous()
    return mamba_chunk_scan_combined(
        x, dt, A, B, C, chunk_size, D=D, z=z, dt_bias=dt_bias, initial_states=initial_states, seq_idx=seq_idx,
        dt_softplus=dt_softplus, dt_limit=dt_limit, return_final_states=return_final_states)


def ssd_step_mamba_ssm(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """``ops.ssd.ssd_step`` on mamba-ssm's ``selective_state_update`` (its decode kernel): the scalar per-head
    A, dt, dt_bias and D are broadcast over the head's channels and state, as mamba-ssm's Mamba2.step does."""
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update
    p, n = x.shape[-1], B.shape[-1]
    A = A[:, None, None].expand(-1, p, n).float()
    dt = dt[..., None].expand(-1, -1, p)
    dt_bias = None if dt_bias is None else dt_bias[:, None].expand(-1, p)
    if D is not None and D.dim() == 1:
        D = D[:, None].expand(-1, p)
    return selective_state_update(state, x, dt, A, B, C, D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus)
