"""running_topk (Co4's causal per-channel running top-k): the reference against a brute-force ranking of every
prefix, and the compiled CPU kernel and the fused Triton kernel (interpreter on CPU) against the reference on
values, ranks, indices and every gradient: ragged T and channel tiles, several k (one lane per list and lists
shared by lanes), ties exact and within bfloat16 rounding, an initial table, float32 / bfloat16 / float64."""
import pytest
import torch

import ops
from ops.co4 import cpu
from ops.co4.reference import ranking_key, running_topk_reference
from ops.testing import assert_close

@pytest.fixture(autouse=True)
def narrow_tiles_in_the_interpreter(monkeypatch):
    """16 channels per program under the interpreter (the GPU launch has 8 to 32): test widths span ragged tiles."""
    try:
        from ops.co4 import triton as kernels
    except ImportError:  # no triton installed: the Triton tests skip anyway
        return
    monkeypatch.setattr(kernels, "INTERPRETER_CHANNELS", 16)


# (batch, T, C, k): one step; ragged T and C below and across the interpreter's 16-channel tiles; k above T;
# k = 33 (64 padded slots; on a GPU a list shared by 4 lanes in 8-channel tiles)
SHAPES = [(2, 1, 3, 4), (2, 23, 19, 4), (1, 30, 21, 12), (1, 9, 5, 12), (1, 19, 9, 33)]


def _values(shape, dtype, seed=0, ties=False):
    B, T, C = shape
    gen = torch.Generator().manual_seed(seed)
    if ties:  # few distinct values: most comparisons are ties
        return torch.randint(0, 4, (B, T, C), generator=gen).to(dtype)
    return torch.randn(B, T, C, generator=gen).to(dtype)


def _initial(B, k, C, dtype, seed=2):
    """A sorted table as a cache holds it."""
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(B, k, C, generator=gen).to(dtype)
    return table.gather(1, ranking_key(table).sort(dim=1, descending=True, stable=True).indices)


def _run(backend, device, values, k, initial=None, initial_count=0, seed=1):
    """Outputs and gradients (values, initial) of a random weighting of top, all on the CPU."""
    leaves = [values.clone().to(device).requires_grad_()]
    if initial is not None:
        leaves.append(initial.clone().to(device).requires_grad_())
    top, rank, index = ops.running_topk(leaves[0], k, leaves[1] if initial is not None else None, initial_count,
                                        return_indices=True, backend=backend)
    weights = torch.randn(top.shape, generator=torch.Generator().manual_seed(seed)).to(top.dtype).to(device)
    grads = torch.autograd.grad((top * weights).sum(), leaves)
    return [t.cpu() for t in (top.detach(), rank, index, *grads)]


def _brute_force(values, k):
    """For each t, sort the prefix (stable: ties to the earlier token) by the rounded key."""
    B, T, C = values.shape
    tops, ranks = [], []
    keys = ranking_key(values)
    for t in range(T):
        order = keys[:, : t + 1].sort(dim=1, descending=True, stable=True).indices[:, :k]
        top = values.gather(1, order)
        tops.append(torch.cat([top, values.new_zeros(B, k - top.shape[1], C)], 1))
        ranks.append((keys[:, :t] >= keys[:, t: t + 1]).sum(1).clamp(max=k))
    return torch.stack(tops, 1), torch.stack(ranks, 1)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_reference_matches_brute_force(shape, ties):
    B, T, C, k = shape
    values = _values((B, T, C), torch.float64, ties=ties)
    top, rank, index = running_topk_reference(values, k)
    expected_top, expected_rank = _brute_force(values, k)
    assert torch.equal(top, expected_top) and torch.equal(rank, expected_rank)
    source = torch.cat([values.new_zeros(B, k, C), values], 1)
    filled = index >= 0
    assert torch.equal(filled.sum(2), torch.arange(1, T + 1).clamp(max=k)[None, :, None].expand(B, T, C))
    assert torch.equal(source.gather(1, index.clamp(min=0).flatten(1, 2)).view_as(top) * filled, top)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_triton_matches_reference(shape, dtype, monkeypatch, triton_device):
    from ops.co4 import triton as kernels
    monkeypatch.setattr(kernels, "FILL_FRESH_BUFFERS_WITH_NAN", True)
    B, T, C, k = shape
    values = _values((B, T, C), dtype)
    expected = _run("reference", "cpu", values, k)
    actual = _run("triton", triton_device, values, k)
    for name, a, e in zip(("top", "rank", "index"), actual, expected):
        assert torch.equal(a, e), f"{name} differs"
    # the kernel sums a row's gradient in float32 in time order; the reference's scatter in the input dtype
    assert_close("d values", actual[3], expected[3], dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_triton_matches_reference_with_an_initial_table_and_ties(dtype, triton_device):
    B, T, C, k = 1, 12, 18, 5
    values = _values((B, T, C), dtype, ties=True)
    initial = _values((B, k, C), dtype, seed=4, ties=True).sort(1, descending=True).values
    for count in (0, 3, k):
        expected = _run("reference", "cpu", values, k, initial, count)
        actual = _run("triton", triton_device, values, k, initial, count)
        for name, a, e in zip(("top", "rank", "index", "d values", "d initial"), actual, expected):
            if name.startswith("d "):
                assert_close(f"{name} (count {count})", a, e, dtype)
            else:
                assert torch.equal(a, e), f"{name} differs (count {count})"


@pytest.mark.parametrize("count", [0, 2])
@pytest.mark.parametrize("chunk,shape", [(4, (2, 26, 17, 4)), (5, (1, 37, 6, 3)), (8, (1, 41, 5, 8))], ids=str)
def test_parallel_in_time_matches_reference(chunk, shape, count, monkeypatch, triton_device):
    """Long inputs run as chunk tables, their merge and the chunks again: the same values, ranks and gradients
    (ties and an initial table included; ragged last chunk; chunks as long as k)."""
    from ops.co4 import triton as kernels
    monkeypatch.setattr(kernels, "TIME_CHUNK", chunk)
    B, T, C, k = shape
    values = _values((B, T, C), torch.float64, ties=True)
    initial = _initial(B, k, C, torch.float64) if count else None
    expected, actual = [], []
    for backend, device, out in (("reference", "cpu", expected), ("triton", triton_device, actual)):
        leaves = [t.clone().to(device).requires_grad_() for t in (values, initial) if t is not None]
        top, rank, _ = ops.running_topk(leaves[0], k, leaves[1] if count else None, count, backend=backend)
        weights = torch.randn(top.shape, generator=torch.Generator().manual_seed(1), dtype=top.dtype).to(device)
        out += [t.cpu() for t in (top.detach(), rank, *torch.autograd.grad((top * weights).sum(), leaves))]
    assert torch.equal(actual[0], expected[0]) and torch.equal(actual[1], expected[1])
    for name, a, e in zip(("d values", "d initial"), actual[2:], expected[2:]):
        assert_close(name, a, e, torch.float64)


BACKENDS = ["reference", "cpu", "triton"]


def _device_and_backend(backend, triton_device):
    """Where each backend runs and the name to ask for: "cpu" is the compiled kernel, which "auto" takes on CPU."""
    if backend == "cpu" and not cpu.available():
        pytest.fail(f"the compiled CPU running top-k is unavailable: {cpu.unavailable_reason()}")
    return (triton_device, "triton") if backend == "triton" else ("cpu", "auto" if backend == "cpu" else backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_go_to_the_earlier_token_exact_and_within_rounding(backend, request):
    """Equal values: token t's rank is t, the rows come from the first k tokens, and so does their gradient. A later
    value larger by less than bfloat16's rounding ties too and still loses to the earlier one."""
    triton_device = request.getfixturevalue("triton_device") if backend == "triton" else None
    device, name = _device_and_backend(backend, triton_device)
    k = 3
    values = torch.ones(1, 10, 2)
    values[0, :, 1] = 1 + torch.arange(10) * 1e-4  # rounds to 1.0 in bfloat16: all tie
    values = values.to(device).requires_grad_()
    top, rank, index = ops.running_topk(values, k, return_indices=True, backend=name)
    assert rank[0, :, 0].tolist() == rank[0, :, 1].tolist() == [0, 1, 2, 3, 3, 3, 3, 3, 3, 3]
    assert index[0, -1].T.tolist() == [[k, k + 1, k + 2]] * 2
    top[:, -1].sum().backward()
    assert values.grad[0].T.tolist() == [[1, 1, 1, 0, 0, 0, 0, 0, 0, 0]] * 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_initial_table_continues_the_sequence(backend, request):
    """Running the second half from the first half's last top-k table equals running the whole, gradients too."""
    triton_device = request.getfixturevalue("triton_device") if backend == "triton" else None
    device, backend = _device_and_backend(backend, triton_device)
    B, T, C, k, split = 1, 14, 6, 4, 6
    values = _values((B, T, C), torch.float64, ties=True).to(device).requires_grad_()
    whole, whole_rank, _ = ops.running_topk(values, k, backend=backend)
    first, first_rank, _ = ops.running_topk(values[:, :split], k, backend=backend)
    second, second_rank, _ = ops.running_topk(values[:, split:], k, first[:, -1], min(split, k), backend=backend)
    assert torch.equal(torch.cat([first, second], 1), whole)
    assert torch.equal(torch.cat([first_rank, second_rank], 1), whole_rank)
    weights = torch.randn(whole.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(device)
    (grad_whole,) = torch.autograd.grad((whole * weights).sum(), values)
    (grad_split,) = torch.autograd.grad((torch.cat([first, second], 1) * weights).sum(), values)
    torch.testing.assert_close(grad_split, grad_whole, rtol=1e-12, atol=1e-12)


# (batch, T, C, k): one step; k above T; ragged widths; a width the vector loops do not divide; k = 65
CPU_SHAPES = [(2, 1, 3, 4), (2, 23, 19, 4), (1, 9, 5, 12), (3, 40, 37, 7), (1, 70, 3, 65)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("shape", CPU_SHAPES, ids=str)
def test_cpu_kernel_matches_reference(shape, ties, dtype):
    """backend="auto" on CPU is the compiled kernel: the same values, ranks and indices as the reference, and the
    same gradients, with and without an initial table."""
    assert cpu.available(), f"the compiled CPU running top-k is unavailable: {cpu.unavailable_reason()}"
    B, T, C, k = shape
    values = _values((B, T, C), dtype, ties=ties)
    initial = _values((B, k, C), dtype, seed=4, ties=ties).sort(1, descending=True).values
    for count in sorted({0, min(2, k), k}):
        table = initial if count else None
        expected = _run("reference", "cpu", values, k, table, count)
        actual = _run("auto", "cpu", values, k, table, count)
        for name, a, e in zip(("top", "rank", "index", "d values", "d initial"), actual, expected):
            if name.startswith("d "):
                assert_close(f"{name} (count {count})", a, e, dtype)
            else:
                assert torch.equal(a, e), f"{name} differs (count {count})"


def test_auto_falls_back_to_the_reference_without_the_compiled_kernel(monkeypatch):
    values = _values((1, 7, 3), torch.float32)
    monkeypatch.setattr(cpu, "available", lambda: False)
    monkeypatch.setattr(cpu, "running_topk_cpu", lambda *a, **kw: pytest.fail("the kernel ran"))
    for a, e in zip(ops.running_topk(values, 3, return_indices=True), running_topk_reference(values, 3)):
        assert torch.equal(a, e)


@pytest.mark.parametrize("call,named", [
    (lambda v: ops.running_topk(v[0], 3), "(7, 3)"),
    (lambda v: ops.running_topk(v[:, :0], 3), "(1, 0, 3)"),
    (lambda v: ops.running_topk(v, 0), "k must be a positive integer, got 0"),
    (lambda v: ops.running_topk(v, True), "got True"),
    (lambda v: ops.running_topk(v, 3, v.new_zeros(1, 3, 3), 4), "initial_count must be an integer in [0, k=3], got 4"),
    (lambda v: ops.running_topk(v, 3, None, 2), "initial_count=2 needs an initial table"),
    (lambda v: ops.running_topk(v, 3, v.new_zeros(1, 2, 3), 1), "(1, 2, 3)"),
    (lambda v: ops.running_topk(v, 3, v.new_zeros(1, 3, 3).double(), 1), "torch.float64"),
    (lambda v: ops.running_topk(v, 3, backend="fastest"), "'fastest'"),
])
def test_bad_arguments_raise_value_error_naming_the_value(call, named):
    with pytest.raises(ValueError) as error:
        call(_values((1, 7, 3), torch.float32))
    assert named in str(error.value) and "running_topk" in str(error.value)


def test_triton_backend_names_what_it_does_not_support(triton_device):
    values = _values((1, 4, 3), torch.float32).to(triton_device)
    with pytest.raises(ValueError, match="k <= 64.*k=65"):
        ops.running_topk(values, 65, backend="triton")


# ---- Co4's fused CPU kernels (ops/co4/cpu_mix.py); the block's tests compare them with the PyTorch path ------------
@pytest.mark.parametrize("per_token", [True, False], ids=["latent rows per token", "shared latent rows"])
@pytest.mark.parametrize("latent_mean", [True, False])
def test_cpu_mix_kernel_gradients_are_the_derivatives(per_token, latent_mean):
    """gradcheck (float64) of the fused top-k + attention kernel: ragged T below and above k, 3 heads of 2."""
    from ops.co4 import cpu_mix
    from tests.native import require_kernel
    require_kernel(cpu_mix, "the fused Co4 CPU kernel")
    gen = torch.Generator().manual_seed(0)
    B, T, D, L, k = 2, 7, 6, 2, 4
    m = [torch.randn(B, T, D, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    shape = (B, T, L, D) if per_token else (L, D)
    lat = [torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    torch.autograd.gradcheck(lambda *a: cpu_mix.co4_mix_cpu(*a, k, 3, 0.7, latent_mean)[0], (*m, *lat))


@pytest.mark.parametrize("latent_mean", [True, False])
def test_cpu_mix_kernel_with_prefix_latents_is_the_two_kernels_composed(latent_mean):
    """``prefix=True`` (the mix kernel makes the latent rows from co4_latent_cpu's inputs) gives what the rows from
    co4_latent_cpu give the kernel, and gradcheck (float64) of its gradients to those inputs."""
    from ops.co4 import cpu_mix
    from tests.native import require_kernel
    require_kernel(cpu_mix, "the fused Co4 CPU kernel")
    gen = torch.Generator().manual_seed(3)
    B, T, D, L, k = 2, 7, 6, 2, 4
    m = [torch.randn(B, T, D, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    projected = torch.randn(B, T, 3 * D, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.rand(B, T, L, generator=gen, dtype=torch.float64).add(0.1).requires_grad_()
    base = torch.randn(L, 3 * D, generator=gen, dtype=torch.float64, requires_grad=True)
    leaves = (*m, projected, weight, base)
    dy = torch.randn(B, T, D, generator=gen, dtype=torch.float64)

    def composed(*a):
        return cpu_mix.co4_mix_cpu(*a[:3], *cpu_mix.co4_latent_cpu(*a[3:])[:3], k, 3, 0.7, latent_mean)[0]

    def fused(*a):
        return cpu_mix.co4_mix_cpu(*a, k, 3, 0.7, latent_mean, prefix=True)[0]

    results = []
    for fn in (composed, fused):
        y = fn(*leaves)
        results.append((y, *torch.autograd.grad(y, leaves, dy)))
    for a, e in zip(results[1], results[0]):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)
    torch.autograd.gradcheck(fused, leaves)


def test_cpu_latent_kernel_gradients_are_the_derivatives():
    from ops.co4 import cpu_mix
    from tests.native import require_kernel
    require_kernel(cpu_mix, "the fused Co4 CPU kernel")
    gen = torch.Generator().manual_seed(1)
    B, T, D, L = 2, 5, 3, 2
    projected = torch.randn(B, T, 3 * D, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.rand(B, T, L, generator=gen, dtype=torch.float64).add(0.1).requires_grad_()
    base = torch.randn(L, 3 * D, generator=gen, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda *a: cpu_mix.co4_latent_cpu(*a), (projected, weight, base))
    # gradients reaching only some outputs (the others None) are the same derivatives
    torch.autograd.gradcheck(lambda *a: cpu_mix.co4_latent_cpu(*a)[5], (projected, weight, base))
