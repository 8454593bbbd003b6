"""The ops that take packed sequences (seq_idx): each equals its documents run one by one, and a backend that
cannot take seq_idx says so in one line."""
import pytest
import torch

from ops.based import based_attention
from ops.causal_conv1d import causal_conv1d
from ops.linear_recurrence import log_linear_recurrence
from ops.packing import document_starts
from ops.selective_scan import selective_scan

LENGTHS = [4, 1, 6]  # one row, three documents


def seq_idx_for(lengths=LENGTHS) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))[None]


def per_document(run, time_dim: int, *tensors):
    """run(*slices) on each document's slice of the time dimension, concatenated back."""
    bounds = torch.tensor([0] + LENGTHS).cumsum(0).tolist()
    return torch.cat([run(*(t.narrow(time_dim, s, e - s) for t in tensors)) for s, e in zip(bounds[:-1], bounds[1:])],
                     dim=time_dim)


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_causal_conv1d_taps_stop_at_a_document_boundary(backend):
    torch.manual_seed(0)
    x, weight, bias = torch.randn(1, 3, sum(LENGTHS)), torch.randn(3, 4), torch.randn(3)
    packed = causal_conv1d(x, weight, bias, seq_idx=seq_idx_for(), activation="silu", backend=backend)
    alone = per_document(lambda xs: causal_conv1d(xs, weight, bias, activation="silu", backend=backend), 2, x)
    torch.testing.assert_close(packed, alone)
    with pytest.raises(ValueError, match="cannot be combined with initial_states"):
        causal_conv1d(x, weight, seq_idx=seq_idx_for(), initial_states=torch.zeros(1, 3, 3))


@pytest.mark.parametrize("backend", ["auto", "reference", "triton"])
def test_selective_scan_restarts_its_state_at_each_document(backend, triton_device):
    """reference and auto (the CPU kernel here): the decay into a document is 0; triton: one row per document."""
    torch.manual_seed(0)
    L = sum(LENGTHS)
    u, delta, z = torch.randn(1, 4, L), torch.randn(1, 4, L), torch.randn(1, 4, L)
    A, B, C, D = -torch.rand(4, 3), torch.randn(1, 3, L), torch.randn(1, 3, L), torch.randn(4)
    run = lambda u, delta, z, B, C: selective_scan(u, delta, A, B, C, D, z, delta_softplus=True,  # noqa: E731
                                                   backend="reference")
    device = triton_device if backend == "triton" else torch.device("cpu")
    on = lambda *ts: [t.to(device) for t in ts]  # noqa: E731
    packed = selective_scan(*on(u, delta, A, B, C, D, z), delta_softplus=True, seq_idx=seq_idx_for().to(device),
                            backend=backend)
    torch.testing.assert_close(packed.cpu(), per_document(run, 2, u, delta, z, B, C), rtol=1e-5, atol=1e-5)


def test_selective_scan_continuing_a_state_takes_the_reference_with_seq_idx():
    torch.manual_seed(0)
    L = sum(LENGTHS)
    u, delta = torch.randn(1, 2, L), torch.rand(1, 2, L)
    A, B, C, h0 = -torch.rand(2, 3), torch.randn(1, 3, L), torch.randn(1, 3, L), torch.randn(1, 2, 3)
    out, last = selective_scan(u, delta, A, B, C, initial_state=h0, return_last_state=True, seq_idx=seq_idx_for())
    first = selective_scan(u[..., :4], delta[..., :4], A, B[..., :4], C[..., :4], initial_state=h0)
    torch.testing.assert_close(out[..., :4], first)  # the initial state reaches the first document only
    alone, alone_last = selective_scan(u[..., 5:], delta[..., 5:], A, B[..., 5:], C[..., 5:], return_last_state=True)
    torch.testing.assert_close(out[..., 5:], alone)
    torch.testing.assert_close(last, alone_last)


def test_based_attention_sums_over_each_document_only():
    torch.manual_seed(0)
    L = sum(LENGTHS)
    q, k, v = torch.randn(1, L, 2, 4), torch.randn(1, L, 2, 4), torch.randn(1, L, 2, 5)
    packed = based_attention(q, k, v, seq_idx=seq_idx_for(), backend="reference")
    alone = per_document(lambda q, k, v: based_attention(q, k, v, backend="reference"), 1, q, k, v)
    torch.testing.assert_close(packed, alone)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_a_log_minus_infinity_coefficient_restarts_the_recurrence_on_every_backend(backend, triton_device):
    """What minGRU / minLSTM do at a document's first position: exp(-inf) = 0, with finite gradients."""
    torch.manual_seed(0)
    L = sum(LENGTHS)
    log_coeffs = torch.randn(1, L, 8).sigmoid().log().requires_grad_()
    log_values = torch.randn(1, L, 8).requires_grad_()
    reset = log_coeffs.masked_fill(document_starts(seq_idx_for())[..., None], float("-inf"))
    device = triton_device if backend == "triton" else torch.device("cpu")
    h, _ = log_linear_recurrence(reset.to(device), log_values.to(device), backend=backend)
    grads = torch.autograd.grad(h.sum(), (log_coeffs, log_values))
    alone = per_document(lambda c, v: log_linear_recurrence(c, v, backend="reference")[0], 1, log_coeffs, log_values)
    grads_alone = torch.autograd.grad(alone.sum(), (log_coeffs, log_values))
    torch.testing.assert_close(h.cpu(), alone, rtol=1e-5, atol=1e-5)
    for got, expected in zip(grads, grads_alone):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
