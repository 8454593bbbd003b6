"""Selective-scan cases for ``python -m zoo.bench ops selective_scan``: Mamba-1 training shapes
(variable B/C, z gate, delta_bias, delta_softplus), ours against mamba-ssm's CUDA ``selective_scan_fn``; on CPU
the compiled CPU kernel (ops/selective_scan/cpu.py) against the reference, which is then the ratio's baseline.

One packed case (``seq_idx``, documents of random lengths): the kernel's in-place restarts against running each
document as its own padded row through the same kernel (what mamba-ssm's Mamba-1 scan needs, and what ours did
before), the ratio's baseline there."""
import torch

from ops.bench_cases import OpCase, OpImpl

GPU_SHAPES = [(8, 1536, 2048, 16), (2, 1536, 8192, 16), (8, 1536, 2048, 64)]   # (batch, dim, L, N), docs/peers.md
# the first is the default Mamba LM's training step on CPU (batch 64 x L 64, d_inner 128), then long and short rows
CPU_SHAPES = [(64, 128, 64, 16), (4, 128, 1024, 16), (1, 64, 1024, 16)]
# (batch, dim, L, N, mean document length): about 8 documents per row, geometric lengths
GPU_PACKED_SHAPE, CPU_PACKED_SHAPE = (8, 1536, 2048, 16, 256), (32, 128, 128, 16, 16)
# the reference materialises several (batch, dim, L, N) float32 tensors per scan step for autograd: time its
# backward only where one such tensor stays under this size, so the anchor N=64 case cannot run out of memory
REFERENCE_BACKWARD_MAX_BYTES = 2 << 30


def _inputs(batch, dim, length, n_state, device, dtype):
    def leaf(t):
        return t.requires_grad_(True)

    return {
        "u": leaf(torch.randn(batch, dim, length, device=device, dtype=dtype)),
        "delta": leaf((torch.randn(batch, dim, length, device=device) * 0.5 - 1.0).to(dtype)),
        "A": leaf(-torch.exp(torch.randn(dim, n_state, device=device) * 0.5)),
        "B": leaf(torch.randn(batch, n_state, length, device=device, dtype=dtype)),
        "C": leaf(torch.randn(batch, n_state, length, device=device, dtype=dtype)),
        "D": leaf(torch.ones(dim, device=device)),
        "z": leaf(torch.randn(batch, dim, length, device=device, dtype=dtype)),
        "delta_bias": leaf(torch.randn(dim, device=device) * 0.1),
    }


def _floor_bytes(batch, dim, length, n_state, dtype):
    """u, delta, z read and out written once (batch*dim*L each), B and C read once, A, D, delta_bias read once."""
    size = torch.empty((), dtype=dtype).element_size()
    return (4 * batch * dim * length + 2 * batch * n_state * length) * size + (dim * n_state + 2 * dim) * 4


def cases(preset: str, device: torch.device, dtype: torch.dtype) -> list[OpCase]:
    from ops.selective_scan.reference import selective_scan as reference_scan

    device = torch.device(device)
    shapes = GPU_SHAPES if preset == "gpu" else CPU_SHAPES
    peer = None
    if device.type == "cuda":
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as peer
        except ImportError:
            peer = None

    cpu_kernel = None
    if device.type == "cpu":
        from ops.selective_scan import cpu
        cpu_kernel = cpu.selective_scan if cpu.available() else None

    out = []
    if device.type == "cuda" or cpu_kernel is not None:  # "auto" is then our kernel: Triton, or the C scan
        out.append(_packed_case(GPU_PACKED_SHAPE if preset == "gpu" else CPU_PACKED_SHAPE, device, dtype))
    for batch, dim, length, n_state in shapes:
        impls = [OpImpl("reference", lambda **kw: reference_scan(**kw, delta_softplus=True),
                        backward=batch * dim * length * n_state * 4 <= REFERENCE_BACKWARD_MAX_BYTES,
                        peer=cpu_kernel is not None)]   # on CPU the reference is what the kernel is compared with
        if cpu_kernel is not None:
            impls.append(OpImpl("cpu", lambda **kw: cpu_kernel(**kw, delta_softplus=True)))
        if device.type == "cuda":
            from ops.selective_scan.triton import selective_scan as triton_scan
            impls.append(OpImpl("triton", lambda **kw: triton_scan(**kw, delta_softplus=True)))
        if peer is not None:
            impls.append(OpImpl("mamba-ssm", lambda **kw: peer(**kw, delta_softplus=True), peer=True))
        out.append(OpCase(
            op="selective_scan", shape=f"B{batch} D{dim} L{length} N{n_state}",
            make_inputs=lambda s=(batch, dim, length, n_state): _inputs(*s, device, dtype),
            floor_bytes=_floor_bytes(batch, dim, length, n_state, dtype), impls=impls,
        ))
    return out


def _packed_case(shape, device, dtype) -> OpCase:
    """backend="auto" (our kernel on this device) given seq_idx, restarting in place, against the same kernel on
    each document as its own row."""
    from ops.selective_scan import _per_document, selective_scan
    batch, dim, length, n_state, mean_document = shape

    def make_inputs():
        inputs = _inputs(batch, dim, length, n_state, device, dtype)
        starts = torch.rand(batch, length, generator=torch.Generator().manual_seed(0)) < 1 / mean_document
        inputs["seq_idx"] = starts.long().cumsum(1).to(device)
        return inputs

    def one_row_per_document(seq_idx, **kw):
        args = [kw[name] for name in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
        return _per_document(*args, True, "auto", seq_idx)

    return OpCase(
        op="selective_scan", shape=f"B{batch} D{dim} L{length} N{n_state} packed (mean document {mean_document})",
        make_inputs=make_inputs, floor_bytes=_floor_bytes(batch, dim, length, n_state, dtype),
        impls=[OpImpl("one row per document", one_row_per_document, peer=True),
               OpImpl("restart in the kernel", lambda **kw: selective_scan(**kw, delta_softplus=True))])
