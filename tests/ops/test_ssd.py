"""ops.ssd (Mamba-2's SSD) against its definition run one step at a time in float64 (written here): outputs, final
state and every input's gradient, with groups, initial states, ragged lengths, several chunk sizes, seq_idx, the
dt options, float32 and bfloat16; strong decays stay finite; the decode step; bad arguments."""
import math

import pytest
import torch
import torch.nn.functional as F

import ops
from ops.ssd.reference import ssd_step
from ops.testing import assert_close, packed_seq_idx
from tests.peers.grads import assert_same_outputs_and_grads, outputs_and_grads


def per_step_loop(x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False, dt_limit=(0.0, math.inf),
                  initial_states=None, seq_idx=None):
    """h_t = exp(dt'_t A) h_{t-1} + dt'_t x_t B_t^T, y_t = h_t C_t + D x_t (times silu(z_t)), in float64."""
    x, dt, A, B, C = (t.double() for t in (x, dt, A, B, C))
    b, length, h, p = x.shape
    heads_per_group = h // B.shape[2]
    dt = dt + dt_bias.double() if dt_bias is not None else dt
    dt = F.softplus(dt) if dt_softplus else dt
    if tuple(dt_limit) != (0.0, math.inf):
        dt = dt.clamp(*dt_limit)
    state = torch.zeros(b, h, p, B.shape[-1], dtype=torch.float64) if initial_states is None \
        else initial_states.double()
    ys = []
    for t in range(length):
        if seq_idx is not None and t > 0:  # a new document starts from zero
            state = state * (seq_idx[:, t] == seq_idx[:, t - 1]).double()[:, None, None, None]
        Bt = B[:, t].repeat_interleave(heads_per_group, dim=1)                 # (b, h, n)
        Ct = C[:, t].repeat_interleave(heads_per_group, dim=1)
        state = torch.exp(dt[:, t] * A)[..., None, None] * state \
            + (dt[:, t, :, None] * x[:, t])[..., None] * Bt[:, :, None, :]
        y = (state * Ct[:, :, None, :]).sum(-1)
        if D is not None:
            y = y + x[:, t] * (D.double()[:, None] if D.dim() == 1 else D.double())
        if z is not None:
            y = y * F.silu(z[:, t].double())
        ys.append(y)
    return torch.stack(ys, dim=1), state


def make_inputs(b=2, length=37, h=4, p=3, g=2, n=5, options=(), seed=0, decay_scale=1.0):
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=gen) * scale

    inputs = dict(x=randn(b, length, h, p), dt=randn(b, length, h, scale=0.5).abs() + 0.05,
                  A=-(torch.rand(h, generator=gen) * 2 + 0.2) * decay_scale,
                  B=randn(b, length, g, n, scale=0.5), C=randn(b, length, g, n, scale=0.5))
    optional = dict(D=randn(h, p), z=randn(b, length, h, p), dt_bias=randn(h, scale=0.3),
                    initial_states=randn(b, h, p, n))
    inputs.update({k: v for k, v in optional.items() if k in options})
    flags = dict(dt_softplus="dt_softplus" in options)
    if "dt_limit" in options:
        flags["dt_limit"] = (0.05, 0.6)
    if "seq_idx" in options:  # row 0: three documents (one a single token), row 1: one
        flags["seq_idx"] = packed_seq_idx(length, [0, 9, 10], [0])
    return inputs, flags


ALL = ("D", "z", "dt_bias", "initial_states", "dt_softplus", "dt_limit", "seq_idx")
# (length, chunk_size, groups, options): ragged lengths against several chunks, one chunk longer than the input
CASES = [
    (37, 8, 2, ()),
    (37, 16, 2, ALL),
    (37, 64, 1, ALL),
    (20, 3, 4, ("initial_states", "seq_idx", "dt_softplus")),
    (1, 4, 1, ("initial_states", "D")),
]


def _case_id(case):
    length, chunk, groups, options = case
    return f"L{length}-Q{chunk}-g{groups}-" + ("+".join(options) or "plain")


def case_inputs(case, dtype):
    """A CASES entry's inputs in ``dtype``, its flags, and the output gradient (float32: cast where it is used)."""
    length, chunk, groups, options = case
    inputs, flags = make_inputs(length=length, g=groups, options=options)
    grad_out = torch.randn(inputs["x"].shape, generator=torch.Generator().manual_seed(5))
    return {k: v.to(dtype) for k, v in inputs.items()}, flags, grad_out


def loop_results(inputs, flags, grad_out, outputs=2):
    """``outputs_and_grads`` of the per-step loop on these inputs in float64, its first ``outputs`` of (y, final)."""
    return outputs_and_grads(lambda **kw: per_step_loop(**kw, **flags)[:outputs],
                             {k: v.double() for k, v in inputs.items()}, grad_out.double())


def check_strong_decays(ssd_fn):
    """exp(dt A) underflows to 0 within a step: no inf - inf, no 0 * inf, in values or gradients. ``ssd_fn``
    takes ops.ssd's keywords."""
    inputs, flags = make_inputs(length=40, options=("initial_states", "seq_idx", "dt_softplus"), decay_scale=1e4)
    inputs["dt"] = inputs["dt"] * 20
    grad_out = torch.randn(inputs["x"].shape, generator=torch.Generator().manual_seed(1))
    got = outputs_and_grads(lambda **kw: ssd_fn(**kw, chunk_size=16, return_final_states=True, **flags), inputs,
                            grad_out)
    (y_want, final_want), grads_want = loop_results(inputs, flags, grad_out)
    for name, grad in got[1].items():
        assert torch.isfinite(grad).all(), f"grad {name} is not finite"
    # the outputs, and of the gradients x's (all of them are finite, checked above)
    assert_same_outputs_and_grads(got, ((y_want, final_want), {"x": grads_want["x"]}), ("y", "final state"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_outputs_final_state_and_every_gradient_match_the_per_step_loop(case, dtype):
    inputs, flags, grad_out = case_inputs(case, dtype)
    got = outputs_and_grads(
        lambda **kw: ops.ssd(**kw, chunk_size=case[1], return_final_states=True, backend="reference", **flags),
        inputs, grad_out.to(dtype))
    (y, final), grads = got
    assert y.dtype == dtype and final.dtype == torch.float32
    assert all(grad.dtype == dtype for grad in grads.values())
    assert_same_outputs_and_grads(got, loop_results(inputs, flags, grad_out), ("y", "final state"), dtype,
                                  grad_scale=2.0)


def test_the_result_does_not_depend_on_the_chunk_size():
    inputs, flags = make_inputs(length=45, options=ALL)
    inputs = {k: v.double() for k, v in inputs.items()}
    results = [ops.ssd(**inputs, chunk_size=chunk, return_final_states=True, **flags) for chunk in (1, 6, 45, 128)]
    for y, final in results[1:]:
        torch.testing.assert_close(y, results[0][0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(final, results[0][1], rtol=1e-10, atol=1e-12)


def test_strong_decays_stay_finite_and_exact():
    check_strong_decays(ops.ssd)


def test_decode_steps_continue_a_prefill():
    inputs, flags = make_inputs(length=12, options=("D", "z", "dt_bias", "dt_softplus", "dt_limit"))
    y_all, final_all = ops.ssd(**inputs, chunk_size=4, return_final_states=True, **flags)
    head = {k: v[:, :7] for k, v in inputs.items() if k not in ("A", "D", "dt_bias")}
    y_head, state = ops.ssd(**{**inputs, **head}, chunk_size=4, return_final_states=True, **flags)
    steps = [ssd_step(state, inputs["x"][:, t], inputs["dt"][:, t], inputs["A"], inputs["B"][:, t],
                      inputs["C"][:, t], inputs["D"], inputs["z"][:, t], inputs["dt_bias"], True, flags["dt_limit"])
             for t in range(7, 12)]
    assert_close("decode", torch.cat([y_head, torch.stack(steps, 1)], 1), y_all, torch.float32)
    assert_close("state after decoding", state, final_all, torch.float32)


@pytest.mark.parametrize("change, message", [
    (dict(x=torch.zeros(2, 5, 4)), "x must be"),
    (dict(B=torch.zeros(2, 5, 3, 2)), "ngroups=3 must divide nheads=4"),
    (dict(dt=torch.zeros(2, 5, 3)), "dt must have shape"),
    (dict(D=torch.zeros(5)), "D must have shape"),
    (dict(chunk_size=0), "chunk_size must be a positive integer, got 0"),
    (dict(dt_limit=(1.0, 0.5)), "dt_limit"),
    (dict(seq_idx=torch.zeros(2, 4, dtype=torch.long)), "seq_idx must have shape"),
    (dict(backend="cuda"), "needs a CUDA device"),
    (dict(backend="triton"), "unknown backend 'triton'"),
])
def test_bad_arguments_name_themselves(change, message):
    args = dict(x=torch.zeros(2, 5, 4, 3), dt=torch.zeros(2, 5, 4), A=torch.zeros(4), B=torch.zeros(2, 5, 2, 6),
                C=torch.zeros(2, 5, 2, 6))
    if "B" in change:
        args["C"] = change["B"]
    with pytest.raises(ValueError, match=message):
        ops.ssd(**{**args, **change})
