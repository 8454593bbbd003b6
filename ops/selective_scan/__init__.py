"""Selective scan (Mamba-1): ``selective_scan(u, delta, A, B, C, ...)`` with mamba_ssm's layouts and semantics."""


from ops._backend import resolve_backend


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, initial_state=None, backend="auto", seq_idx=None):
    """Selective scan; see ``ops.selective_scan.reference`` for the definition.

    u, delta, z: (batch, dim, L); A: (dim, N) real; B, C: (dim, N), (batch, N, L) or (batch, G, N, L);
    D, delta_bias: (dim,); initial_state: (batch, dim, N) state before the first step (prefill continuation).
    Returns out (batch, dim, L) in u's dtype, or (out, last_state (batch, dim, N) float32).
    backend: "auto" (Triton on CUDA; on CPU the compiled kernel of ``ops.selective_scan.cpu`` when a C compiler
    is there, else the reference) | "reference" | "triton" | "cuda" (mamba_ssm's CUDA kernel).
    seq_idx (batch, L) integer, packed sequences (see ops.packing): the state restarts from zero at each
    document's first position. The reference, the Triton kernel and the CPU kernel do that in their scan (the
    decay into a document is 0); the cuda backend (mamba_ssm's Mamba-1 scan has no seq_idx) runs each document as
    its own row (gathered, padded at the end, gathered back), without initial_state or return_last_state, which
    then go to the reference.
    """
    which = resolve_backend(backend, u.device, "selective_scan", cuda_package="mamba_ssm")
    if seq_idx is not None:
        from ops.packing import check_seq_idx
        check_seq_idx(seq_idx, u.shape[0], u.shape[-1], "selective_scan")
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if which == "triton" and B.dim() >= 3 and C.dim() >= 3:
        from ops.selective_scan.triton import selective_scan as triton_scan
        return triton_scan(*args, initial_state=initial_state, seq_idx=seq_idx)
    if which == "cuda":
        if seq_idx is None:
            from ops.selective_scan.cuda import selective_scan as cuda_scan
            return cuda_scan(*args, initial_state=initial_state)
        if initial_state is None and not return_last_state:
            return _per_document(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend, seq_idx)
    if _cpu_kernel_runs(backend, u, A):
        from ops.selective_scan import cpu
        return cpu.selective_scan(*args, initial_state=initial_state, seq_idx=seq_idx)
    # reference, and the time-invariant B/C cases that the Triton kernel leaves to it
    from ops.selective_scan.reference import selective_scan as reference_scan
    return reference_scan(*args, initial_state=initial_state, seq_idx=seq_idx)


def _cpu_kernel_runs(backend, u, A) -> bool:
    """backend="auto" on CPU takes the compiled C kernel when it builds here (real A)."""
    if backend != "auto" or u.device.type != "cpu" or A.is_complex():
        return False
    from ops.selective_scan import cpu
    return cpu.available(A.shape[-1])


def _per_document(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend, seq_idx):
    """The scan of each packed document as its own row: any backend, the padding after a document unread."""
    from ops.packing import DocumentLayout
    layout = DocumentLayout(seq_idx)

    def unpack(t):  # time is the last dimension here, the packing helpers want it second
        return None if t is None or t.dim() < 3 else layout.unpack(t.movedim(-1, 1)).movedim(1, -1)
    B = unpack(B) if B.dim() >= 3 else B
    C = unpack(C) if C.dim() >= 3 else C
    out = selective_scan(unpack(u), unpack(delta), A, B, C, D, unpack(z), delta_bias, delta_softplus,
                         backend=backend)
    return layout.repack(out.movedim(-1, 1)).movedim(1, -1)


__all__ = ["selective_scan"]
