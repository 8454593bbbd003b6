"""ops.delta_rule and ops.gated_delta_rule against a plain per-token float64 loop written here: outputs, final
state and every input's gradient, with initial states, ragged lengths, several chunk sizes, packed rows, beta
near 0 and near 2, strong decays, and float32 / bfloat16 inputs."""
import pytest
import torch

import ops
from ops.delta_rule.reference import delta_rule_step
from ops.gated_delta_rule.reference import gated_delta_rule_step
from ops.testing import assert_close, packed_seq_idx


def loop(q, k, v, g, beta, scale, initial_state=None, seq_idx=None):
    """S_t = exp(g_t) (I - beta_t k_t^T k_t) S_{t-1} + beta_t k_t^T v_t, o_t = scale q_t S_t, token by token in
    float64; the state restarts (is zeroed) where seq_idx changes."""
    q, k, v, beta = (x.double() for x in (q, k, v, beta))
    B, T, H, K = q.shape
    S = torch.zeros(B, H, K, v.shape[-1], dtype=torch.float64) if initial_state is None else initial_state.double()
    eye = torch.eye(K, dtype=torch.float64)
    out = []
    for t in range(T):
        if seq_idx is not None and t > 0:
            S = S * (seq_idx[:, t] == seq_idx[:, t - 1]).double()[:, None, None, None]
        kt, bt = k[:, t], beta[:, t][..., None, None]
        transition = eye - bt * kt[..., :, None] * kt[..., None, :]
        if g is not None:
            transition = transition * g[:, t].double().exp()[..., None, None]
        S = transition @ S + bt * kt[..., :, None] * v[:, t][..., None, :]
        out.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    return torch.stack(out, dim=1), S


def make_inputs(B=2, T=11, H=2, K=4, V=3, dtype=torch.float64, beta_range=(0.0, 1.0), decay=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=gen)
    k = torch.nn.functional.normalize(torch.randn(B, T, H, K, generator=gen), dim=-1)  # as the blocks give it
    v = torch.randn(B, T, H, V, generator=gen)
    lo, hi = beta_range
    beta = lo + (hi - lo) * torch.rand(B, T, H, generator=gen)
    g = -decay * torch.rand(B, T, H, generator=gen)
    h0 = torch.randn(B, H, K, V, generator=gen)
    return [x.to(dtype) for x in (q, k, v, g, beta, h0)]


def run(gated: bool, q, k, v, g, beta, backend="reference", **kwargs):
    """ops.gated_delta_rule, or ops.delta_rule (g unused) when not ``gated``."""
    if gated:
        return ops.gated_delta_rule(q, k, v, g, beta, backend=backend, **kwargs)
    return ops.delta_rule(q, k, v, beta, backend=backend, **kwargs)


GATED = pytest.mark.parametrize("gated", [False, True], ids=["delta_rule", "gated_delta_rule"])
NAMES = ("q", "k", "v", "g", "beta", "initial_state")


def compare(gated, inputs, seq_idx=None, scale=None, dtype=torch.float64, **options):
    """``run`` (with ``options``: the backend, a chunk size) against the loop: output, final state, and every
    input's gradient under random weights of both (the delta rule's g gets none)."""
    q, k, v, g, beta, h0 = inputs
    leaves = [x.clone().requires_grad_() for x in (q, k, v, g, beta, h0)]
    o, final = run(gated, *leaves[:5], initial_state=leaves[5], output_final_state=True, seq_idx=seq_idx,
                   scale=scale, **options)
    o_ref, final_ref = loop(*leaves[:3], leaves[3] if gated else None, leaves[4],
                            q.shape[-1] ** -0.5 if scale is None else scale, leaves[5], seq_idx)
    assert_close("output", o, o_ref, dtype)
    assert_close("final state", final, final_ref, dtype)
    gen = torch.Generator().manual_seed(5)
    up_o, up_s = torch.randn(o.shape, generator=gen).double(), torch.randn(final.shape, generator=gen).double()
    grads = torch.autograd.grad((o * up_o).sum() + (final * up_s).sum(), leaves, allow_unused=True)
    grads_ref = torch.autograd.grad((o_ref * up_o).sum() + (final_ref * up_s).sum(), leaves, allow_unused=True)
    for name, grad, grad_ref in zip(NAMES, grads, grads_ref):
        if name == "g" and not gated:
            assert grad is None and grad_ref is None
            continue
        assert_close(f"grad of {name}", grad, grad_ref, dtype)


def strong_decay_inputs():
    inputs = make_inputs(T=40, decay=30.0)
    inputs[3][:, 17] = -200.0  # exp(-200): the state before position 17 is gone
    return inputs


def assert_float32_gradients_finite(inputs, backend):
    leaves = [x.clone().float().requires_grad_() for x in inputs]
    o, final = run(True, *leaves[:5], initial_state=leaves[5], output_final_state=True, backend=backend)
    (o.sum() + final.sum()).backward()
    assert all(torch.isfinite(x.grad).all() for x in leaves)


def check_low_precision(gated, dtype, **options):
    """``run`` (with ``options``) on inputs rounded to ``dtype``: output in dtype, state in float32, finite
    gradients, and both within dtype's bound of the float64 loop."""
    q, k, v, g, beta, h0 = make_inputs(T=33, beta_range=(0.0, 2.0))
    o_ref, final_ref = loop(q, k, v, g if gated else None, beta, 4 ** -0.5, h0)
    leaves = [x.to(dtype).requires_grad_() for x in (q, k, v, g, beta, h0)]
    o, final = run(gated, *leaves[:5], initial_state=leaves[5], output_final_state=True, **options)
    assert o.dtype == dtype and final.dtype == torch.float32
    (o.float().sum() + final.sum()).backward()
    assert all(torch.isfinite(x.grad).all() for x in (leaves if gated else leaves[:3] + leaves[4:]))
    # the inputs were rounded to dtype, so the bound is the dtype's (bf16 inputs: ~1e-2 relative each)
    assert_close("output", o.float(), o_ref, dtype, scale=2.0)
    assert_close("final state", final, final_ref, dtype, scale=2.0)


@GATED
@pytest.mark.parametrize("T,chunk_size", [(11, 4), (16, 16), (7, 64), (9, 1)])
def test_outputs_state_and_every_gradient_match_the_loop(gated, T, chunk_size):
    compare(gated, make_inputs(T=T, beta_range=(0.0, 2.0)), scale=0.7, chunk_size=chunk_size)


@GATED
def test_packed_rows_restart_the_state_at_each_document(gated):
    q, k, v, g, beta, h0 = make_inputs(T=13)
    seq_idx = packed_seq_idx(13, [4, 5, 9], [12])
    leaves = [x.clone().requires_grad_() for x in (q, k, v, g, beta, h0)]
    o, final = run(gated, *leaves[:5], initial_state=leaves[5], output_final_state=True, seq_idx=seq_idx,
                   chunk_size=4)
    o_ref, final_ref = loop(*leaves[:3], leaves[3] if gated else None, leaves[4], 4 ** -0.5, leaves[5], seq_idx)
    assert_close("output", o, o_ref, torch.float64)
    assert_close("final state", final, final_ref, torch.float64)
    grads = torch.autograd.grad(o.sum() + final.sum(), leaves, allow_unused=True)
    grads_ref = torch.autograd.grad(o_ref.sum() + final_ref.sum(), leaves, allow_unused=True)
    for name, grad, grad_ref in zip(NAMES, grads, grads_ref):
        if grad_ref is not None:
            assert_close(f"grad of {name}", grad, grad_ref, torch.float64)
    # the first row's initial state reaches only its first document (positions 0..3)
    assert grads[5][0].abs().sum() > 0


@GATED
@pytest.mark.parametrize("beta_range", [(0.0, 1e-3), (1.999, 2.0)], ids=["beta~0", "beta~2"])
def test_beta_near_zero_and_near_two(gated, beta_range):
    q, k, v, g, beta, h0 = make_inputs(T=21, beta_range=beta_range)
    o, final = run(gated, q, k, v, g, beta, initial_state=h0, output_final_state=True, chunk_size=8)
    o_ref, final_ref = loop(q, k, v, g if gated else None, beta, 4 ** -0.5, h0)
    assert_close("output", o, o_ref, torch.float64)
    assert_close("final state", final, final_ref, torch.float64)


def test_strong_decays_forget_and_stay_finite():
    inputs = strong_decay_inputs()
    q, k, v, g, beta, h0 = inputs
    o, final = run(True, q, k, v, g, beta, initial_state=h0, output_final_state=True, chunk_size=16)
    o_ref, final_ref = loop(q, k, v, g, beta, 4 ** -0.5, h0)
    assert_close("output", o, o_ref, torch.float64)
    assert_close("final state", final, final_ref, torch.float64)
    assert_float32_gradients_finite(inputs, backend="reference")


@GATED
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_low_precision_inputs_are_finite_and_close(gated, dtype):
    check_low_precision(gated, dtype, chunk_size=16)


@GATED
def test_the_decode_step_continues_the_chunked_form(gated):
    q, k, v, g, beta, h0 = make_inputs(T=9, dtype=torch.float32)
    o, final = run(gated, q[:, :6], k[:, :6], v[:, :6], g[:, :6], beta[:, :6], initial_state=h0,
                   output_final_state=True, chunk_size=4)
    state = final.clone()
    steps = []
    for t in range(6, 9):
        if gated:
            steps.append(gated_delta_rule_step(q[:, t], k[:, t], v[:, t], g[:, t], beta[:, t], state))
        else:
            steps.append(delta_rule_step(q[:, t], k[:, t], v[:, t], beta[:, t], state))
    o_ref, final_ref = loop(q, k, v, g if gated else None, beta, 4 ** -0.5, h0)
    assert_close("prefill", o, o_ref[:, :6], torch.float32)
    assert_close("decode", torch.stack(steps, dim=1), o_ref[:, 6:], torch.float32)
    assert_close("state", state, final_ref, torch.float32)


def test_no_final_state_unless_asked_and_the_default_scale():
    q, k, v, g, beta, _ = make_inputs(T=5, K=9)
    o, final = ops.delta_rule(q, k, v, beta)
    assert final is None
    assert_close("default scale", o, loop(q, k, v, None, beta, 9 ** -0.5)[0], torch.float64)


@pytest.mark.parametrize("bad,message", [
    (dict(v=torch.zeros(2, 5, 3, 3)), "expected q, k (B, T, H, K) and v"),
    (dict(beta=torch.zeros(2, 5)), "beta must have shape (B, T, H)"),
    (dict(g=torch.zeros(2, 4, 2)), "g must have shape (B, T, H)"),
    (dict(initial_state=torch.zeros(2, 2, 3, 3)), "initial_state must have shape (B, H, K, V) = (2, 2, 4, 3)"),
    (dict(seq_idx=torch.zeros(2, 4, dtype=torch.long)), "seq_idx must have shape"),
    (dict(backend="fla"), "backend='fla' needs a CUDA device"),
    (dict(backend="triton"), "unknown backend 'triton'"),
])
def test_bad_arguments_raise_one_line_errors(bad, message):
    q, k, v, g, beta, _ = make_inputs(T=5, dtype=torch.float32)
    args = dict(q=q, k=k, v=v, g=g, beta=beta)
    args.update(bad)
    with pytest.raises(ValueError, match=None) as error:
        ops.gated_delta_rule(**args)
    assert message in str(error.value) and "\n" not in str(error.value)
    args.pop("g")
    if "g" not in bad:
        with pytest.raises(ValueError) as error:
            ops.delta_rule(**args)
        assert message in str(error.value)


def test_the_fla_adapter_gives_fla_one_flat_row_and_one_state_per_document():
    """The GPU path's packing, checked on CPU with a stand-in for fla's kernel (fla's cu_seqlens semantics: batch 1,
    documents back to back, initial and final state per document) built from the reference."""
    from ops.gated_delta_rule.fla import run_fla
    from ops.gated_delta_rule.reference import gated_delta_rule_chunked

    def fake_fla(q, k, v, beta, scale, initial_state, output_final_state, cu_seqlens, g):
        assert q.shape[0] == 1 and initial_state.shape[0] == len(cu_seqlens) - 1
        outs, finals = [], []
        for i, (s, e) in enumerate(zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist())):
            o, final = gated_delta_rule_chunked(q[:, s:e], k[:, s:e], v[:, s:e], g[:, s:e], beta[:, s:e], scale,
                                                initial_state[i:i + 1], True)
            outs.append(o)
            finals.append(final)
        return torch.cat(outs, dim=1), torch.cat(finals)

    q, k, v, g, beta, h0 = make_inputs(T=13)
    seq_idx = packed_seq_idx(13, [4, 5, 9], [12])
    o, final = run_fla(fake_fla, q, k, v, beta, g, 0.5, h0, True, seq_idx)
    o_ref, final_ref = loop(q, k, v, g, beta, 0.5, h0, seq_idx)
    assert_close("output", o, o_ref, torch.float64)
    assert_close("final state", final, final_ref, torch.float64)
