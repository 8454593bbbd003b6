"""ops.gla (gated linear attention) against its definition run one step at a time in float64 (written here):
outputs, final state and every input's gradient, with initial states, ragged lengths, several chunk sizes, seq_idx,
float32 and bfloat16; strong decays stay finite; the decode step; bad arguments."""
import pytest
import torch
import torch.nn.functional as F

import ops
from ops.gla.reference import gla_step
from ops.testing import assert_close, packed_seq_idx
from tests.peers.grads import assert_same_outputs_and_grads, outputs_and_grads


def per_step_loop(q, k, v, g, scale=None, initial_state=None, seq_idx=None):
    """S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t, o_t = scale q_t S_t, in float64."""
    q, k, v, g = (t.double() for t in (q, k, v, g))
    B, T, H, K = q.shape
    scale = K ** -0.5 if scale is None else scale
    state = torch.zeros(B, H, K, v.shape[-1], dtype=torch.float64) if initial_state is None \
        else initial_state.double()
    out = []
    for t in range(T):
        if seq_idx is not None and t > 0:  # a new document starts from zero
            state = state * (seq_idx[:, t] == seq_idx[:, t - 1]).double()[:, None, None, None]
        state = torch.exp(g[:, t])[..., None] * state + k[:, t, :, :, None] * v[:, t, :, None, :]
        out.append(scale * (q[:, t, :, :, None] * state).sum(-2))
    return torch.stack(out, dim=1), state


def make_inputs(B=2, T=37, H=2, K=6, V=5, options=(), seed=0, decay_scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    inputs = dict(q=torch.randn(B, T, H, K, generator=gen), k=torch.randn(B, T, H, K, generator=gen),
                  v=torch.randn(B, T, H, V, generator=gen),
                  g=F.logsigmoid(torch.randn(B, T, H, K, generator=gen) + 1.5) * decay_scale)
    if "initial_state" in options:
        inputs["initial_state"] = torch.randn(B, H, K, V, generator=gen)
    flags = {}
    if "seq_idx" in options:  # row 0: three documents (one a single token), row 1: one
        flags["seq_idx"] = packed_seq_idx(T, [0, 9, 10], [0])
    if "scale" in options:
        flags["scale"] = 0.3
    return inputs, flags


def results(gla_fn, length, options, dtype, decay_scale=1.0, seed=5):
    """``outputs_and_grads`` of ``gla_fn`` (ops.gla's keywords; asked for the final state) on make_inputs' inputs
    cast to ``dtype``, and of the per-step loop on the same inputs in float64."""
    inputs, flags = make_inputs(T=length, options=options, decay_scale=decay_scale)
    inputs = {k: v.to(dtype) for k, v in inputs.items()}
    grad_out = torch.randn(inputs["v"].shape, generator=torch.Generator().manual_seed(seed))
    got = outputs_and_grads(lambda **kw: gla_fn(**kw, output_final_state=True, **flags), inputs, grad_out.to(dtype))
    want = outputs_and_grads(lambda **kw: per_step_loop(**kw, **flags), {k: v.double() for k, v in inputs.items()},
                             grad_out.double())
    return got, want


ALL = ("initial_state", "seq_idx", "scale")
# (T, chunk_size, options): ragged lengths against several chunks, one chunk longer than the input
CASES = [(37, 16, ()), (37, 8, ALL), (37, 64, ALL), (20, 3, ("initial_state", "seq_idx")), (1, 16, ("initial_state",))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"T{c[0]}-Q{c[1]}-" + ("+".join(c[2]) or "plain"))
def test_outputs_final_state_and_every_gradient_match_the_per_step_loop(case, dtype):
    length, chunk, options = case
    got, want = results(lambda **kw: ops.gla(**kw, chunk_size=chunk, backend="reference"), length, options, dtype)
    (o, final), grads = got
    assert o.dtype == dtype and final.dtype == torch.float32
    assert all(grad.dtype == dtype for grad in grads.values())
    assert_same_outputs_and_grads(got, want, ("o", "final state"), dtype, grad_scale=2.0)


def test_the_result_does_not_depend_on_the_chunk_size():
    inputs, flags = make_inputs(T=45, options=ALL)
    inputs = {k: v.double() for k, v in inputs.items()}
    results = [ops.gla(**inputs, output_final_state=True, chunk_size=chunk, backend="reference", **flags)
               for chunk in (1, 7, 45, 128)]
    for o, final in results[1:]:
        torch.testing.assert_close(o, results[0][0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(final, results[0][1], rtol=1e-10, atol=1e-12)


def test_without_a_final_state_none_is_returned():
    inputs, _ = make_inputs(T=5)
    assert ops.gla(**inputs)[1] is None


@pytest.mark.parametrize("decay_scale", [1e2, 1e4])
def test_strong_decays_stay_finite_and_exact(decay_scale):
    """A chunk's decay far past float32's exp range (~88 nats): the factored form exp(G) * exp(-G) would give
    inf * 0; the pairwise decays here give 0, in values and gradients."""
    got, want = results(lambda **kw: ops.gla(**kw, chunk_size=16), 40, ("initial_state", "seq_idx"), torch.float32,
                        decay_scale, seed=1)
    for name, grad in got[1].items():
        assert torch.isfinite(grad).all(), f"grad {name} is not finite"
    del want[1]["g"]  # d/dg of exp(g) at g = -1e4 is 0 in float32, ~1e-4000 in float64: both zero to compare
    assert_same_outputs_and_grads(got, want, ("o", "final state"))


def test_decode_steps_continue_a_prefill():
    inputs, _ = make_inputs(T=12, options=("initial_state",))
    o_all, final_all = ops.gla(**inputs, output_final_state=True, chunk_size=4)
    o_head, state = ops.gla(*(inputs[n][:, :7] for n in "qkvg"), initial_state=inputs["initial_state"],
                            output_final_state=True, chunk_size=4)
    steps = [gla_step(state, *(inputs[n][:, t] for n in "qkvg")) for t in range(7, 12)]
    assert_close("decode", torch.cat([o_head, torch.stack(steps, 1)], 1), o_all, torch.float32)
    assert_close("state after decoding", state, final_all, torch.float32)


@pytest.mark.parametrize("change, message", [
    (dict(k=torch.zeros(2, 5, 3, 3)), "expected q, k, g"),
    (dict(v=torch.zeros(2, 4, 3, 2)), "expected q, k, g"),
    (dict(initial_state=torch.zeros(2, 3, 4, 3)), r"initial_state must have shape \(B, H, K, V\)"),
    (dict(chunk_size=0), "chunk_size must be a positive integer, got 0"),
    (dict(seq_idx=torch.zeros(2, 5)), "seq_idx must be an integer tensor"),
    (dict(backend="fla"), "needs a CUDA device"),
    (dict(backend="cuda"), "unknown backend 'cuda'"),
])
def test_bad_arguments_name_themselves(change, message):
    args = dict(q=torch.zeros(2, 5, 3, 4), k=torch.zeros(2, 5, 3, 4), v=torch.zeros(2, 5, 3, 2),
                g=torch.zeros(2, 5, 3, 4))
    with pytest.raises(ValueError, match=message):
        ops.gla(**{**args, **change})
