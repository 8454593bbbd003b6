"""BASED Taylor linear attention: the reference forms agree, and the fused kernel matches them (outputs and grads)."""
import importlib.util

import pytest
import torch

from ops.based.reference import (
    based_attention_chunked,
    based_attention_quadratic,
    based_step,
    expanded_dim,
    taylor_feature_map,
)
from ops.testing import assert_close

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _inputs(B, T, H, K, V, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, T, H, K, generator=gen) for _ in range(2))
    v = torch.randn(B, T, H, V, generator=gen)
    return tuple(x.to(dtype) for x in (q, k, v))


def _grads(fn, inputs, grad_out):
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*leaves)
    return (out, *torch.autograd.grad(out, leaves, grad_out.to(out.dtype)))


# ---------------------------------------------------------------- the feature map and the reference forms

@pytest.mark.parametrize("d", [1, 3, 16])
@pytest.mark.parametrize("scale", [None, 0.37])
def test_feature_map_inner_product_is_the_taylor_score(d, scale):
    gen = torch.Generator().manual_seed(d)
    q, k = torch.randn(2, 50, d, generator=gen, dtype=torch.float64).unbind(0)
    phi_q, phi_k = taylor_feature_map(q, scale), taylor_feature_map(k, scale)
    assert phi_q.shape[-1] == expanded_dim(d) == 1 + d + d * (d + 1) // 2
    s = (q @ k.T) * (d ** -0.5 if scale is None else scale)
    assert_close("phi(q).phi(k)", (phi_q @ phi_k.T).double(), 1 + s + s * s / 2, torch.float32)


@pytest.mark.parametrize("T", [1, 37, 64, 100])
@pytest.mark.parametrize("use_norm", [True, False])
def test_chunked_matches_quadratic_with_grads(T, use_norm):
    inputs = _inputs(2, T, 3, 4, 6, seed=T)
    grad_out = torch.randn(2, T, 3, 6, generator=torch.Generator().manual_seed(1))
    expected = _grads(lambda q, k, v: based_attention_quadratic(q, k, v, use_norm=use_norm), inputs, grad_out)
    actual = _grads(lambda q, k, v: based_attention_chunked(q, k, v, use_norm=use_norm, chunk_size=16),
                    inputs, grad_out)
    for name, a, e in zip(("o", "dq", "dk", "dv"), actual, expected):
        if T == 1 and use_norm and name in ("dq", "dk"):  # o_0 = v_0 A/(A + eps): dq, dk are O(eps)
            assert a.abs().max() < 1e-4 and e.abs().max() < 1e-4, (name, a.abs().max(), e.abs().max())
            continue
        assert_close(name, a, e, torch.float32)


def test_chunked_state_carries_across_calls_and_step_matches():
    q, k, v = _inputs(2, 45, 2, 4, 5, seed=3)
    full, (kv_full, k_full) = based_attention_chunked(q, k, v, chunk_size=8, output_final_state=True)
    first, state = based_attention_chunked(q[:, :20], k[:, :20], v[:, :20], chunk_size=8, output_final_state=True)
    second, (kv_end, k_end) = based_attention_chunked(q[:, 20:], k[:, 20:], v[:, 20:], chunk_size=8,
                                                      initial_state=state, output_final_state=True)
    assert_close("o across calls", torch.cat([first, second], 1), full, torch.float32)
    # the state is sum phi(k) v^T and sum phi(k) over every token, padding excluded
    phi_k = taylor_feature_map(k).transpose(1, 2)  # (B, H, T, D)
    assert_close("kv state", kv_full, phi_k.transpose(-1, -2) @ v.transpose(1, 2), torch.float32)
    assert_close("k state", k_full, phi_k.sum(2), torch.float32)
    assert_close("kv state across calls", kv_end, kv_full, torch.float32)
    assert_close("k state across calls", k_end, k_full, torch.float32)

    kv_state, k_state = torch.zeros_like(kv_full), torch.zeros_like(k_full)
    steps = [based_step(q[:, t], k[:, t], v[:, t], kv_state, k_state) for t in range(q.shape[1])]
    assert_close("step by step", torch.stack(steps, 1), full, torch.float32)


# ---------------------------------------------------------------- the fused kernel

# (B, T, H, K, V, forward blocks, backward blocks); None = the H100 defaults. Small tiles make tiny T span several
# tiles with a ragged last one; K and V that are not powers of two exercise the width masks.
KERNEL_SHAPES = [
    (2, 37, 2, 16, 24, (32, 16, 4, 1), (16, 16, 4, 1)),
    (1, 70, 3, 8, 40, None, None),
    (1, 50, 2, 5, 17, (16, 16, 4, 1), (32, 16, 4, 1)),
]


@pytest.mark.parametrize("shape", KERNEL_SHAPES, ids=lambda s: "B{}T{}H{}K{}V{}".format(*s[:5]))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("use_norm", [True, False], ids=["norm", "nonorm"])
def test_triton_matches_quadratic_reference(shape, dtype, use_norm, monkeypatch, triton_device):
    from ops.based import triton as kernels
    monkeypatch.setattr(kernels, "FILL_FRESH_BUFFERS_WITH_NAN", True)
    B, T, H, K, V, fwd_blocks, bwd_blocks = shape
    inputs = _inputs(B, T, H, K, V, dtype, seed=T + K)
    grad_out = torch.randn(B, T, H, V, generator=torch.Generator().manual_seed(7))
    scale = K ** -0.5
    def fused(q, k, v):
        return kernels.based_attention_triton(q, k, v, scale, use_norm, 1e-6, fwd_blocks, bwd_blocks)
    actual = _grads(fused, [x.to(triton_device) for x in inputs], grad_out.to(triton_device))
    # the fp32 reference on the same (rounded) inputs
    expected = _grads(lambda q, k, v: based_attention_quadratic(q, k, v, scale, use_norm),
                      [x.float() for x in inputs], grad_out)
    assert actual[0].dtype == dtype
    for name, a, e in zip(("o", "dq", "dk", "dv"), actual, expected):
        assert a.dtype == dtype, f"{name} dtype {a.dtype}"
        assert_close(name, a.float().cpu(), e, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_triton_reads_slices_of_a_fused_projection_in_place(dtype, monkeypatch, triton_device):
    """q, k, v as strided views of one (B, T, H*(2K+V)) projection: the kernel reads them through their strides
    (no copies) and gives the reference's outputs and gradients, the gradients landing in the fused tensor."""
    from ops.based import triton as kernels
    monkeypatch.setattr(kernels, "FILL_FRESH_BUFFERS_WITH_NAN", True)
    B, T, H, K, V = 2, 45, 2, 16, 24
    fused = torch.randn(B, T, H * (2 * K + V), generator=torch.Generator().manual_seed(3)).to(dtype)
    grad_out = torch.randn(B, T, H, V, generator=torch.Generator().manual_seed(4))

    def split(x):
        q, k, v = x.split([H * K, H * K, H * V], dim=-1)
        return q.view(B, T, H, K), k.view(B, T, H, K), v.view(B, T, H, V)

    results = []
    for device, run in ((triton_device, lambda q, k, v: kernels.based_attention_triton(q, k, v, K ** -0.5)),
                        ("cpu", lambda q, k, v: based_attention_quadratic(q, k, v))):
        x = fused.detach().to(device) if device != "cpu" else fused.detach().float()
        x.requires_grad_()
        q, k, v = split(x)
        assert not q.is_contiguous() and q.stride() == k.stride()
        if device != "cpu":
            assert kernels._readable_in_place(q, k, v)[0].data_ptr() == q.data_ptr(), "q was copied"
        out = run(q, k, v)
        out.backward(grad_out.to(device).to(out.dtype))
        results.append((out.detach().float().cpu(), x.grad.float().cpu()))
    (out, grad), (want_out, want_grad) = results
    assert_close("o", out, want_out, dtype)
    assert_close("grad of the fused projection", grad, want_grad, dtype)


def test_public_op_dispatch_and_defaults():
    import ops
    q, k, v = _inputs(1, 20, 2, 16, 8, seed=5)
    expected = based_attention_quadratic(q, k, v, scale=0.25, use_norm=True)
    assert_close("reference backend, default scale", ops.based_attention(q, k, v, backend="reference"), expected,
                 torch.float32)
    assert_close("auto on CPU", ops.based_attention(q, k, v, 0.25), expected, torch.float32)
    unnormalised = based_attention_quadratic(q, k, v, scale=0.1, use_norm=False)
    assert_close("scale and use_norm", ops.based_attention(q, k, v, 0.1, False, backend="reference"), unnormalised,
                 torch.float32)
    with pytest.raises(ValueError, match="expected q, k"):
        ops.based_attention(q, k, v[:, :10])
    with pytest.raises(ValueError, match="unknown backend"):
        ops.based_attention(q, k, v, backend="fast")
    assert_close("auto falls back for float64", ops.based_attention(q.double(), k.double(), v.double(), 0.25).float(),
                 expected, torch.float32)


def test_triton_backend_names_what_it_does_not_support(triton_device):
    import ops
    q, k, v = (x.double().to(triton_device) for x in _inputs(1, 20, 2, 16, 8, seed=5))
    with pytest.raises(ValueError, match="feature dim <= 128"):
        ops.based_attention(q, k, v, backend="triton")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fla parity needs CUDA")
@pytest.mark.skipif(importlib.util.find_spec("fla") is None, reason="fla (flash-linear-attention) not installed")
@pytest.mark.parametrize("use_norm", [True, False])
def test_triton_matches_fla_parallel_based(use_norm):
    from fla.ops.based import parallel_based

    import ops
    q, k, v = (x.cuda() for x in _inputs(2, 300, 4, 16, 64, torch.bfloat16, seed=11))
    ours = ops.based_attention(q, k, v, use_norm=use_norm, backend="triton")
    theirs = parallel_based(q, k, v, None, use_norm)
    assert_close("o vs fla", ours.float(), theirs.float(), torch.bfloat16)
