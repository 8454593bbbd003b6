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


# ---- the fused CPU kernels' batch rows on several threads (torch.get_num_threads() > 1) ---------------------------
@pytest.fixture
def torch_threads(monkeypatch):
    """torch.set_num_threads, restored after the test; the small test shapes run threaded (no token threshold)."""
    from ops.co4 import cpu_mix
    monkeypatch.setattr(cpu_mix, "MIN_THREADED_TOKENS", 0)
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


# argument positions in the kernels' calls (ops/co4/cpu_mix.py's _ARGS, _LATENT_ARGS)
MIX_B, MIX_DY, MIX_D_LAT, MIX_D_BASE = 9, 19, slice(23, 26), 31
LATENT_B, LATENT_D_BASE, LATENT_SCRATCH = 3, 21, 22


def _record_kernel_batches(monkeypatch, cpu_mix, fail_at_batch=None):
    """Wrap both kernels' entry points: each call's arguments are recorded (the list per kernel name); a call of
    ``fail_at_batch`` rows returns an error code (2 for co4_mix, 1 for co4_latent) without running."""
    from types import SimpleNamespace
    calls = {"co4_mix": [], "co4_latent": []}
    for getter, name, batch_arg, code in (("_library", "co4_mix", MIX_B, 2),
                                          ("_latent_library", "co4_latent", LATENT_B, 1)):
        real = getattr(cpu_mix, getter)

        def library(dtype, real=real, name=name, batch_arg=batch_arg, code=code):
            kernel = getattr(real(dtype), name)

            def spy(*args):
                calls[name].append(args)
                return code if args[batch_arg] == fail_at_batch else kernel(*args)
            return SimpleNamespace(**{name: spy})
        monkeypatch.setattr(cpu_mix, getter, library)
    return calls


def _mix_on_threads(cpu_mix, threads, set_threads, mode, B, cached, dtype=torch.float64):
    """co4_mix_cpu's outputs (mix, last) and the gradients of every input for a random dy, on ``threads`` threads;
    ``cached``: continuing from the tables of 5 earlier tokens (initial_count = 4 = k)."""
    gen = torch.Generator().manual_seed(7)
    T, D, L, k, heads = 9, 8, 3, 4, 2
    m = [torch.randn(B, T, D, generator=gen, dtype=dtype, requires_grad=True) for _ in range(3)]
    if mode == "prefix":
        lat = [torch.randn(B, T, 3 * D, generator=gen, dtype=dtype), torch.rand(B, T, L, generator=gen, dtype=dtype)
               + 0.1, torch.randn(L, 3 * D, generator=gen, dtype=dtype)]
    else:
        shape = (B, T, L, D) if mode == "per token" else (L, D)
        lat = [torch.randn(*shape, generator=gen, dtype=dtype) for _ in range(3)]
    lat = [t.requires_grad_() for t in lat]
    dy = torch.randn(B, T, D, generator=gen, dtype=dtype)
    initial, count = None, 0
    if cached:  # the tables a cache holds after 5 earlier tokens (with per-token rows: rows of their own)
        earlier = [torch.randn(B, 5, D, generator=gen, dtype=dtype) for _ in range(3)]
        earlier_lat = [t[:, :5] if t.dim() > 2 else t for t in lat]  # static rows and the base are not per token
        set_threads(1)
        with torch.no_grad():
            initial = cpu_mix.co4_mix_cpu(*earlier, *earlier_lat, k, heads, 0.6, True, prefix=mode == "prefix")[1]
        count = min(5, k)
    set_threads(threads)
    y, last = cpu_mix.co4_mix_cpu(*m, *lat, k, heads, 0.6, True, initial, count, prefix=mode == "prefix")
    grads = torch.autograd.grad(y, (*m, *lat), dy)
    return y.detach(), last, grads


@pytest.mark.parametrize("cached", [False, True], ids=["no cache", "continued cache"])
@pytest.mark.parametrize("B", [4, 3, 1])
@pytest.mark.parametrize("mode", ["prefix", "static", "per token"])
def test_cpu_mix_kernel_on_two_threads_is_the_single_call(mode, B, cached, torch_threads, monkeypatch):
    """Batch rows on 2 threads (two slices, one call each; B = 3 cut 1 + 2; B = 1 one call) give the outputs and
    tables of the single call exactly and every gradient (the latents' sums, shared rows: each slice's buffer,
    summed after) to float64 rounding."""
    from ops.co4 import cpu_mix
    from tests.native import require_kernel
    require_kernel(cpu_mix, "the fused Co4 CPU kernel")
    calls = _record_kernel_batches(monkeypatch, cpu_mix)
    single = _mix_on_threads(cpu_mix, 1, torch_threads, mode, B, cached)
    assert [a[MIX_B] for a in calls["co4_mix"][-2:]] == [B, B]  # forward, backward: one call each, whole batch
    calls["co4_mix"].clear()
    threaded = _mix_on_threads(cpu_mix, 2, torch_threads, mode, B, cached)
    slices = [B // 2, B - B // 2] if B > 1 else [1]
    recorded = calls["co4_mix"][-2 * len(slices):]  # the cache's tables (cached) were made before, on 1 thread
    assert sorted(a[MIX_B] for a in recorded) == sorted(slices * 2)
    backward = [a for a in recorded if a[MIX_DY] is not None]
    # what the kernel accumulates over batch rows is each slice's own buffer (a shared one would race)
    accumulated = [a[MIX_D_BASE] for a in backward] if mode == "prefix" else (
        [p for a in backward for p in a[MIX_D_LAT]] if mode == "static" else [])
    assert None not in accumulated and len(set(accumulated)) == len(accumulated)
    assert torch.equal(threaded[0], single[0]), "mix differs"
    assert torch.equal(threaded[1], single[1]), "last tables differ"
    assert torch.isfinite(single[1][:, :, :4]).all()  # the tables are filled (not left at -inf)
    names = ["d m_q", "d m_k", "d m_v"] + (["d projected", "d weight", "d base"] if mode == "prefix" else
                                         ["d lat_q", "d lat_k", "d lat_v"])
    for name, a, e in zip(names, threaded[2], single[2]):
        assert e.abs().max() > 0, f"{name} is zero: the test would not see it"
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12, msg=name)


def test_cpu_mix_kernel_on_two_threads_in_float32_with_prefix_latents(torch_threads):
    """The block's case (float32, prefix latents): the same outputs and tables, gradients to float32 rounding."""
    from ops.co4 import cpu_mix
    from tests.native import require_kernel
    require_kernel(cpu_mix, "the fused Co4 CPU kernel")
    single, threaded = (_mix_on_threads(cpu_mix, n, torch_threads, "prefix", 6, False, torch.float32) for n in (1, 2))
    assert torch.equal(threaded[0], single[0]) and torch.equal(threaded[1], single[1])
    for a, e in zip(threaded[2], single[2]):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rows", [True, False], ids=["rows and statistics", "statistics only"])
@pytest.mark.parametrize("B,threads", [(4, 2), (3, 2), (1, 2), (5, 3)])
def test_cpu_latent_kernel_on_several_threads_is_the_single_call(B, threads, rows, torch_threads, monkeypatch):
    """co4_latent_cpu with its batch rows on threads: the same outputs; the same gradients (d_base, summed over
    the slices' own buffers, to float64 rounding; each slice its own scratch)."""
    from ops.co4 import cpu_mix
    from tests.native import require_kernel
    require_kernel(cpu_mix, "the fused Co4 CPU kernel")
    calls = _record_kernel_batches(monkeypatch, cpu_mix)
    gen = torch.Generator().manual_seed(5)
    T, D, L = 7, 4, 3
    leaves = (torch.randn(B, T, 3 * D, generator=gen, dtype=torch.float64),
              torch.rand(B, T, L, generator=gen, dtype=torch.float64) + 0.1,
              torch.randn(L, 3 * D, generator=gen, dtype=torch.float64))
    results = []
    for n in (1, threads):
        torch_threads(n)
        calls["co4_latent"].clear()
        inputs = [t.clone().requires_grad_() for t in leaves]
        outputs = cpu_mix.co4_latent_cpu(*inputs, rows=rows)
        weights = [torch.randn(t.shape, generator=torch.Generator().manual_seed(i), dtype=t.dtype)
                   for i, t in enumerate(outputs)]
        grads = torch.autograd.grad(sum((t * w).sum() for t, w in zip(outputs, weights)), inputs)
        slices = min(n, B)
        assert sorted(a[LATENT_B] for a in calls["co4_latent"]) == sorted(
            [B * (i + 1) // slices - B * i // slices for i in range(slices)] * 2)
        # backward: each slice its own d_base and scratch (shared, they would race)
        for arg in (LATENT_D_BASE, LATENT_SCRATCH):
            pointers = [a[arg] for a in calls["co4_latent"] if a[LATENT_SCRATCH] is not None]
            assert len(pointers) == slices and len(set(pointers)) == slices
        results.append(([t.detach() for t in outputs], grads))
    (single_out, single_grads), (threaded_out, threaded_grads) = results
    for a, e in zip(threaded_out, single_out):
        assert torch.equal(a, e)
    for name, a, e in zip(("d projected", "d weight", "d base"), threaded_grads, single_grads):
        assert e.abs().max() > 0
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12, msg=name)


def test_a_failing_slice_raises_the_kernels_error(torch_threads, monkeypatch):
    """An error code from one slice's call (here the second of B = 3 on 2 threads, 2 rows) is the same
    RuntimeError as from the single call."""
    from ops.co4 import cpu_mix
    from tests.native import require_kernel
    require_kernel(cpu_mix, "the fused Co4 CPU kernel")
    _record_kernel_batches(monkeypatch, cpu_mix, fail_at_batch=2)
    torch_threads(2)
    m = [torch.randn(3, 5, 4) for _ in range(3)]
    with pytest.raises(RuntimeError, match=r"co4_mix kernel failed \(code 2: L \+ k > 4096\)"):
        cpu_mix.co4_mix_cpu(*m, *[torch.randn(2, 4) for _ in range(3)], 3, 2, 0.5, True)
    with pytest.raises(RuntimeError, match="co4_latent kernel failed: out of memory"):
        cpu_mix.co4_latent_cpu(torch.randn(3, 5, 12), torch.rand(3, 5, 2), torch.randn(2, 12))


def test_small_calls_stay_one_kernel_call_on_several_threads(monkeypatch):
    """Under MIN_THREADED_TOKENS batch rows x tokens (a decoding step) the batch runs as one call, whatever the
    thread count; at the threshold it is cut."""
    from ops.co4 import cpu_mix
    from tests.native import require_kernel
    require_kernel(cpu_mix, "the fused Co4 CPU kernel")
    calls = _record_kernel_batches(monkeypatch, cpu_mix)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for T, expected in ((cpu_mix.MIN_THREADED_TOKENS // 4 - 1, [4]), (cpu_mix.MIN_THREADED_TOKENS // 4, [2, 2])):
            calls["co4_mix"].clear()
            m = [torch.randn(4, T, 4) for _ in range(3)]
            cpu_mix.co4_mix_cpu(*m, *[torch.randn(2, 4) for _ in range(3)], 3, 2, 0.5, True)
            assert [a[MIX_B] for a in calls["co4_mix"]] == expected
    finally:
        torch.set_num_threads(before)


MIX_WEIGHTS = 32  # the saved attention weights' argument (ops/co4/cpu_mix.py's _ARGS)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("cached", [False, True], ids=["no cache", "continued cache"])
@pytest.mark.parametrize("mode", ["prefix", "static", "per token"])
def test_cpu_mix_kernel_backward_from_saved_weights_is_the_recomputing_one(mode, cached, dtype, torch_threads,
                                                                          monkeypatch):
    """When a gradient is wanted and the weights fit SAVED_WEIGHTS_MAX_BYTES the forward saves the attention weights
    and the backward reads them instead of recomputing them: outputs, tables and every gradient are those of the
    recomputing backward (SAVED_WEIGHTS_MAX_BYTES = 0) bit for bit; without a gradient nothing is saved."""
    from ops.co4 import cpu_mix
    from tests.native import require_kernel
    require_kernel(cpu_mix, "the fused Co4 CPU kernel")
    calls = _record_kernel_batches(monkeypatch, cpu_mix)
    saved = _mix_on_threads(cpu_mix, 1, torch_threads, mode, 3, cached, dtype)
    forward, backward = calls["co4_mix"][-2:]
    assert forward[MIX_DY] is None and backward[MIX_DY] is not None
    assert forward[MIX_WEIGHTS] is not None and backward[MIX_WEIGHTS] == forward[MIX_WEIGHTS]
    monkeypatch.setattr(cpu_mix, "SAVED_WEIGHTS_MAX_BYTES", 0)
    recomputed = _mix_on_threads(cpu_mix, 1, torch_threads, mode, 3, cached, dtype)
    assert [a[MIX_WEIGHTS] for a in calls["co4_mix"][-2:]] == [None, None]
    assert torch.equal(saved[0], recomputed[0]) and torch.equal(saved[1], recomputed[1])
    for a, e in zip(saved[2], recomputed[2]):
        assert e.abs().max() > 0
        assert torch.equal(a, e)
    monkeypatch.setattr(cpu_mix, "SAVED_WEIGHTS_MAX_BYTES", 2 ** 30)
    m = [torch.randn(2, 5, 4, dtype=dtype) for _ in range(3)]
    with torch.no_grad():
        cpu_mix.co4_mix_cpu(*m, *[torch.randn(2, 4, dtype=dtype) for _ in range(3)], 3, 2, 0.5, True)
    assert calls["co4_mix"][-1][MIX_WEIGHTS] is None
