"""Adapter to mamba_ssm's CUDA ``selective_scan_fn`` (optional package, imported only when this runs)."""


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, initial_state=None):
    if initial_state is not None:
        raise ValueError("selective_scan: backend='cuda' (mamba_ssm) takes no initial_state; "
                         "use backend='triton' or 'reference' to continue from a state")
    if A.is_complex():
        raise ValueError("selective_scan: complex A is not supported (real A only)")
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    return selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
