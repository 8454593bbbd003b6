"""ops.dplr_delta_rule against a plain per-step float64 loop written here: outputs, final state and the gradient of
every input, with initial states, ragged lengths, several chunk sizes, packed documents, strong decays, and fp32 /
bf16 inputs staying finite."""
import pytest
import torch

import ops
from ops.dplr_delta_rule.reference import dplr_delta_rule_chunked, dplr_delta_rule_step
from ops.testing import assert_close, packed_seq_idx
from tests.helpers import dplr_inputs
from tests.peers.grads import assert_same_outputs_and_grads, outputs_and_grads

NAMES = ("q", "k", "v", "a", "b", "gk")


def loop(q, k, v, a, b, gk, scale=None, initial_state=None, output_final_state=False, seq_idx=None):
    """S_t = (diag(exp(gk_t)) + b_t^T a_t) S_{t-1} + k_t^T v_t, o_t = scale q_t S_t, one step at a time, float64."""
    B, T, H, K = q.shape
    scale = K ** -0.5 if scale is None else scale
    q, k, v, a, b, gk = (x.double() for x in (q, k, v, a, b, gk))
    S = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.double()
    outputs = []
    for t in range(T):
        if seq_idx is not None and t > 0:
            S = S * (seq_idx[:, t] == seq_idx[:, t - 1]).double().view(B, 1, 1, 1)
        read = torch.einsum("bhk,bhkv->bhv", a[:, t], S)
        S = (gk[:, t].exp()[..., None] * S + b[:, t][..., None] * read[..., None, :]
             + k[:, t][..., None] * v[:, t][..., None, :])
        outputs.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    return torch.stack(outputs, dim=1), (S if output_final_state else None)


def compare(inputs, grad_out, got_fn, dtype=torch.float64, **options):
    want = outputs_and_grads(lambda **kw: loop(**kw, output_final_state=True, **options), inputs, grad_out)
    got = outputs_and_grads(lambda **kw: got_fn(**kw, output_final_state=True, **options), inputs, grad_out)
    assert_same_outputs_and_grads(got, want, ("o", "final state"), dtype)


def check_packed_documents(got_fn):
    inputs, grad_out = dplr_inputs(B=2, T=21, seed=2)
    seq_idx = packed_seq_idx(21, [5, 6, 13], [20])  # a one-token document, and one at the very end
    compare(inputs, grad_out, got_fn, seq_idx=seq_idx)


def check_strong_decays(got_fn):
    """gk down to -60 per step."""
    inputs, grad_out = dplr_inputs(T=37, decay=60.0, seed=3)
    compare(inputs, grad_out, got_fn)


def check_low_precision(got_fn, dtype, decay):
    """``got_fn`` on inputs in ``dtype``: o in dtype, the state in float32, finite gradients in dtype, o and the
    state within dtype's bound of the float64 loop."""
    inputs, grad_out = dplr_inputs(T=50, decay=decay, seed=5, dtype=dtype)
    got = outputs_and_grads(lambda **kw: got_fn(**kw, output_final_state=True), inputs, grad_out)
    assert got[0][0].dtype == dtype and got[0][1].dtype == torch.float32, "o in the inputs' dtype, state in fp32"
    for name, grad in got[1].items():
        assert grad.dtype == dtype and torch.isfinite(grad).all(), f"grad {name}: {grad.dtype}, or not finite"
    want = loop(**{n: x.double() for n, x in inputs.items()}, output_final_state=True)
    assert_close("o", got[0][0].float(), want[0], dtype)
    assert_close("final state", got[0][1], want[1], dtype)


@pytest.mark.parametrize("T", [1, 7, 19, 40])
@pytest.mark.parametrize("chunk_size", [1, 4, 16, 64])
def test_chunked_reference_matches_the_loop(T, chunk_size):
    inputs, grad_out = dplr_inputs(T=T)
    compare(inputs, grad_out, lambda **kw: dplr_delta_rule_chunked(**kw, chunk_size=chunk_size))


@pytest.mark.parametrize("scale", [None, 0.7])
@pytest.mark.parametrize("initial_state", [True, False])
def test_public_op_matches_the_loop(scale, initial_state):
    inputs, grad_out = dplr_inputs(T=23, initial_state=initial_state, seed=1)
    compare(inputs, grad_out, lambda **kw: ops.dplr_delta_rule(**kw, backend="reference"), scale=scale)


def test_packed_documents_restart_the_state():
    check_packed_documents(lambda **kw: ops.dplr_delta_rule(**kw, backend="reference"))


def test_strong_decays_stay_finite_and_exact():
    """gk down to -60 per step: exp(-G) over a chunk would overflow, so the reference takes pairwise differences."""
    check_strong_decays(lambda **kw: dplr_delta_rule_chunked(**kw, chunk_size=16))


def test_one_step_function_matches_the_loop():
    inputs, _ = dplr_inputs(T=9, seed=4)
    want, want_state = loop(**inputs, output_final_state=True)
    state = inputs["initial_state"]
    steps = []
    for t in range(9):
        o, state = dplr_delta_rule_step(*(inputs[n][:, t] for n in NAMES), state)
        steps.append(o)
    assert_close("o", torch.stack(steps, dim=1), want, torch.float64)
    assert_close("final state", state, want_state, torch.float64)


@pytest.mark.parametrize("decay", [0.6, 30.0])  # RWKV-7's range (factored decays), and strong (pairwise form)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_low_precision_inputs_are_finite_and_close(dtype, decay):
    check_low_precision(lambda **kw: ops.dplr_delta_rule(**kw, backend="reference"), dtype, decay)


@pytest.mark.parametrize("bad, message", [
    (dict(v=torch.zeros(2, 5, 2, 3)), "expected q, k, a, b, gk"),
    (dict(initial_state=torch.zeros(2, 2, 4, 4)), "initial_state must be"),
    (dict(backend="triton"), "unknown backend 'triton'"),
    (dict(backend="fla"), "needs a CUDA device"),
    (dict(seq_idx=torch.zeros(2, 4, dtype=torch.long)), "seq_idx must have shape"),
])
def test_bad_arguments_are_named_in_one_line(bad, message):
    arguments = {name: torch.zeros(2, 6, 2, 4) for name in NAMES}
    arguments["v"] = torch.zeros(2, 6, 2, 3)
    arguments.update(bad)
    with pytest.raises(ValueError, match=message) as error:
        ops.dplr_delta_rule(**arguments)
    assert "\n" not in str(error.value)
