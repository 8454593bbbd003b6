"""Adapter to fla's GLA kernels (fla-core, optional; imported only when these run on a CUDA device)."""
import torch

from ops.packing import document_starts


def gla_fla(q, k, v, g, scale=None, initial_state=None, output_final_state=False, seq_idx=None, recurrent=False):
    """``ops.gla`` on fla's ``chunk_gla`` (``fused_recurrent_gla`` when ``recurrent``: short inputs, decoding).

    Packed rows go to fla as one flat sequence with ``cu_seqlens``: every document gets its own initial state
    (the row's ``initial_state`` for a row's first document, zeros for the others), and the final state of a
    row is its last document's.
    """
    from fla.ops.gla import chunk_gla, fused_recurrent_gla
    if recurrent:
        def run(q, k, v, g, **kw):
            return fused_recurrent_gla(q, k, v, gk=g, **kw)
    else:
        run = chunk_gla
    if seq_idx is None:
        return run(q, k, v, g, scale=scale, initial_state=initial_state, output_final_state=output_final_state)
    B, T, H, K = q.shape
    starts = document_starts(seq_idx).flatten()
    first = starts.nonzero()[:, 0]                                          # flat position of each document
    cu_seqlens = torch.cat([first, first.new_tensor([B * T])])
    row_first_doc = torch.cumsum(starts.view(B, T).sum(1), 0) - starts.view(B, T).sum(1)
    row_last_doc = torch.cumsum(starts.view(B, T).sum(1), 0) - 1
    states = None
    if initial_state is not None:
        states = initial_state.new_zeros(len(first), *initial_state.shape[1:])
        states[row_first_doc] = initial_state
    flat = [t.reshape(1, B * T, *t.shape[2:]) for t in (q, k, v, g)]
    o, final = run(*flat, scale=scale, initial_state=states, output_final_state=output_final_state,
                   cu_seqlens=cu_seqlens)
    return o.view(B, T, *o.shape[2:]), (final[row_last_doc] if final is not None else None)
