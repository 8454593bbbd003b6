"""Timing cases for BASED linear attention: ``python -m zoo.bench ops based``.

GPU preset: the anchor shape B8 T2048 H12 F16 V64 (docs/peers.md). Peers, when importable: fla's
``parallel_based`` (the ratio column's base) and ``fused_chunk_based``; torch SDPA causal softmax attention with
head dim 64 on the same B, T, H for context (it is the quadratic-exact alternative BASED competes with).
"""
import torch

from ops.bench_cases import OpCase, OpImpl

SHAPES = {"gpu": [(8, 2048, 12, 16, 64)], "cpu": [(2, 256, 4, 16, 32)]}


def _fla_peers() -> list[OpImpl]:
    try:
        from fla.ops.based import fused_chunk_based, parallel_based
    except Exception as error:  # absent, or built against another triton: time without it
        print(f"[zoo.bench ops] based: fla peers skipped ({type(error).__name__}: {error})")
        return []
    return [
        OpImpl("fla parallel_based", lambda q, k, v, **_: parallel_based(q, k, v, None, True), peer=True),
        OpImpl("fla fused_chunk_based", lambda q, k, v, **_: fused_chunk_based(q, k, v, None, True), peer=True),
    ]


def _sdpa(q_sdpa, k_sdpa, v_sdpa, **_):
    return torch.nn.functional.scaled_dot_product_attention(q_sdpa, k_sdpa, v_sdpa, is_causal=True)


def cases(preset: str, device: torch.device, dtype: torch.dtype) -> list[OpCase]:
    from ops.based import based_attention

    result = []
    for B, T, H, K, V in SHAPES[preset]:
        def make_inputs(B=B, T=T, H=H, K=K, V=V):
            leaf = lambda *shape: torch.randn(*shape, device=device, dtype=dtype).requires_grad_()  # noqa: E731
            return {
                "q": leaf(B, T, H, K), "k": leaf(B, T, H, K), "v": leaf(B, T, H, V),
                # softmax attention peer: full head dim V for q and k, (B, H, T, V) as SDPA wants
                "q_sdpa": leaf(B, H, T, V), "k_sdpa": leaf(B, H, T, V), "v_sdpa": leaf(B, H, T, V),
            }

        impls = [OpImpl("reference (chunked)", lambda q, k, v, **_: based_attention(q, k, v, backend="reference"))]
        if device.type == "cuda":
            impls.append(OpImpl("triton", lambda q, k, v, **_: based_attention(q, k, v, backend="triton")))
            impls += _fla_peers()
        impls.append(OpImpl("torch SDPA causal (D=V)", _sdpa, peer=True))
        element = torch.finfo(dtype).bits // 8
        result.append(OpCase(
            op="based", shape=f"B{B} T{T} H{H} F{K} V{V}", make_inputs=make_inputs,
            floor_bytes=element * B * T * H * (2 * K + 2 * V),  # read q, k, v; write o
            impls=impls,
        ))
    return result
