"""fla's kernels for the (gated) delta rule: ``chunk_*`` for training and prefill, ``fused_recurrent_*`` for
one-token decoding. fla is imported here only, inside the functions (it is optional)."""
from ops.packing import cu_seqlens_from_seq_idx


def run_fla(kernel, q, k, v, beta, g, scale, initial_state, output_final_state, seq_idx):
    """Call fla's ``kernel`` (a chunk_* or fused_recurrent_* function) with the zoo's arguments.

    Packed rows: fla takes cu_seqlens over one flat row, with one initial and final state per document; each
    row's initial state goes to its first document and its final state is read from its last one.
    """
    gate = {} if g is None else {"g": g}
    if seq_idx is None:
        return kernel(q=q, k=k, v=v, beta=beta, scale=scale, initial_state=initial_state,
                      output_final_state=output_final_state, **gate)
    B, T = q.shape[:2]
    cu_seqlens, first, last = cu_seqlens_from_seq_idx(seq_idx)
    flat = lambda x: x.reshape(1, B * T, *x.shape[2:])  # noqa: E731
    if initial_state is not None:
        per_document = initial_state.new_zeros(len(cu_seqlens) - 1, *initial_state.shape[1:])
        initial_state = per_document.index_copy(0, first, initial_state)
    if g is not None:
        gate = {"g": flat(g)}
    o, final = kernel(q=flat(q), k=flat(k), v=flat(v), beta=flat(beta), scale=scale, initial_state=initial_state,
                      output_final_state=output_final_state, cu_seqlens=cu_seqlens, **gate)
    return o.reshape(B, T, *o.shape[2:]), (final[last] if final is not None else None)


def gated_delta_rule_fla(q, k, v, g, beta, scale, initial_state, output_final_state, seq_idx):
    if q.shape[1] == 1:
        from fla.ops.gated_delta_rule import fused_recurrent_gated_delta_rule as kernel
    else:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule as kernel
    return run_fla(kernel, q, k, v, beta, g, scale, initial_state, output_final_state, seq_idx)
