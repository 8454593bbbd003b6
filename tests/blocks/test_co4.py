"""Co4: the block (the chunked PyTorch top-k and the compiled CPU one) equals its O(N^2) oracle (outputs and every
gradient) with latents that read the prefix and with static ones, decodes like its parallel forward, keeps exactly
state_size numbers, breaks top-k ties towards the earlier token, lets earlier tokens reach later outputs through
the latents, and rejects bad arguments."""
from pathlib import Path

import pytest
import torch
import yaml

from ops.co4 import cpu, cpu_mix
from tests.blocks.co4_reference import co4_oracle
from ops.co4.reference import ranking_key
import zoo.blocks.co4 as co4_module
from zoo.blocks.co4 import CACHE_NAMES, Co4, running_topk_indices
from zoo.blocks.registry import MIXERS, build_mixer
from zoo.model import LM
from tests.native import skip_or_fail_without_native

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"
F64 = dict(rtol=1e-9, atol=1e-9)

# (hyperparameters, sequence length): top-k saturated or not, chunk boundaries inside and at the top-k size,
# one head or several, each latent-output mode, with and without the optional projection, each latent mode
# (one latent reading the prefix: the released code's single CLS latent)
SETTINGS = [
    ({"latents": 2, "topk": 3, "num_heads": 4, "chunk_size": 5}, 17),
    ({"latents": 1, "topk": 12, "num_heads": 1, "chunk_size": 4}, 9),     # fewer tokens than k
    ({"latents": 4, "topk": 5, "num_heads": 2, "chunk_size": 64, "latent_mode": "static"}, 23),    # one chunk
    ({"latents": 3, "topk": 2, "num_heads": 2, "chunk_size": 1, "latent_output": "none",
      "output_projection": True}, 11),
]
# the block's top-k paths on CPU: "reference" counts ranks chunk by chunk in PyTorch, "auto" is the compiled kernel
CPU_BACKENDS = ["reference", "auto"]


def running_topk_chunk(carry: torch.Tensor, chunk: torch.Tensor, seen: int):
    """(top (B, C, k, S), rank): the chunked path's running top-k values themselves (gathered, so differentiable),
    0 in slots the prefix cannot fill yet. See running_topk_indices."""
    order, rank = running_topk_indices(carry, chunk, seen)
    B, C, k, S = order.shape
    source = torch.cat([carry, chunk, chunk.new_zeros(B, 1, S)], dim=1)
    return torch.gather(source, 1, order.reshape(B, C * k, S)).view(B, C, k, S), rank


@pytest.fixture(scope="module", autouse=True)
def the_compiled_kernel_builds():
    if not (cpu.available() and cpu_mix.available()):
        skip_or_fail_without_native(f"Co4's compiled CPU kernels are unavailable: "
                                    f"{cpu.unavailable_reason() or cpu_mix.unavailable_reason()}")


def _block(seed=0, d_model=32, dtype=torch.float64, **hyper):
    torch.manual_seed(seed)
    return Co4(d_model, **hyper).to(dtype)


def _x(B, T, d=32, seed=1, dtype=torch.float64):
    return torch.randn(B, T, d, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _outputs_and_grads(forward, block, x, weights):
    x = x.clone().requires_grad_()
    block.zero_grad()
    y = forward(x)
    (y * weights).sum().backward()
    return y.detach(), x.grad, {name: p.grad.clone() for name, p in block.named_parameters()}


def test_registered_under_its_config_name():
    assert MIXERS["co4"] is Co4
    block = build_mixer("co4", 32, layer_idx=1, latents=3, topk=5, num_heads=4)
    assert (block.latents, block.topk, block.num_heads, block.head_dim, block.layer_idx) == (3, 5, 4, 8, 1)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("hyper,seq", SETTINGS, ids=lambda v: str(v) if isinstance(v, int) else None)
def test_chunked_equals_oracle_outputs_and_gradients(hyper, seq, backend):
    block = _block(backend=backend, **hyper)
    x = _x(2, seq)
    weights = _x(2, seq, seed=7)
    y, dx, grads = _outputs_and_grads(block, block, x, weights)
    y_ref, dx_ref, grads_ref = _outputs_and_grads(lambda inp: co4_oracle(block, inp), block, x, weights)
    torch.testing.assert_close(y, y_ref, **F64)
    torch.testing.assert_close(dx, dx_ref, **F64)
    assert set(grads) == set(grads_ref)
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, f"{name} gets no gradient"
        torch.testing.assert_close(grad, grads_ref[name], **F64, msg=lambda m, n=name: f"grad of {n}: {m}")


@pytest.mark.parametrize("latent_mode", ["prefix", "static"])
def test_results_do_not_depend_on_the_attention_pieces(latent_mode, monkeypatch):
    """The small attention runs in pieces of as many tokens as fit ATTENTION_SCORES: pieces of 4 tokens (the
    chunk size) give the same outputs as one piece."""
    block = _block(topk=3, chunk_size=4, latent_mode=latent_mode)
    x = _x(2, 11)
    expected = block(x)
    monkeypatch.setattr(co4_module, "ATTENTION_SCORES", 1)
    assert block._piece(2) == 4
    torch.testing.assert_close(block(x), expected, **F64)


@pytest.mark.parametrize("chunk_size", [1, 3, 8, 100])
def test_results_do_not_depend_on_chunk_size(chunk_size):
    x = _x(2, 30)
    expected = _block(topk=6, chunk_size=30)(x)
    torch.testing.assert_close(_block(topk=6, chunk_size=chunk_size)(x), expected, **F64)


@pytest.mark.parametrize("hyper,seq", SETTINGS, ids=lambda v: str(v) if isinstance(v, int) else None)
def test_causal_across_chunk_boundaries(hyper, seq):
    block = _block(**hyper)
    x = _x(1, seq)
    y = block(x)
    for t in range(seq - 1):
        changed = x.clone()
        changed[:, t + 1:] = _x(1, seq - t - 1, seed=t + 20)
        y_changed = block(changed)
        torch.testing.assert_close(y_changed[:, : t + 1], y[:, : t + 1], **F64)
        assert not torch.allclose(y_changed[:, t + 1], y[:, t + 1]), f"output {t + 1} ignores its own input"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("prefill", [0, 1, 4, 13])
def test_prefill_then_decode_equals_parallel_forward(prefill, dtype):
    block = _block(dtype=dtype, latents=3, topk=4, num_heads=2, chunk_size=5)
    x = _x(2, 21, dtype=dtype)
    with torch.no_grad():
        expected = block(x)
        cache = block.allocate_cache(2, dtype=dtype)
        pieces = [block(x[:, :prefill], cache)] if prefill else []
        pieces += [block(x[:, t: t + 1], cache) for t in range(prefill, x.shape[1])]
    assert cache.seen == 21 and cache["top_v"].dtype == dtype
    tolerance = F64 if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat(pieces, 1), expected, **tolerance)


def test_cache_holds_the_running_top_k_of_each_modulated_stream():
    block = _block(topk=4)
    x = _x(2, 9)
    cache = block.allocate_cache(2)
    with torch.no_grad():
        block(x, cache)
        streams, _ = block.modulate(x)
    for name, m in zip(("top_q", "top_k", "top_v"), streams):
        order = ranking_key(m).sort(dim=1, descending=True, stable=True).indices[:, :4]
        torch.testing.assert_close(cache[name], m.gather(1, order), **F64)


@pytest.mark.parametrize("latent_mode", ["prefix", "static"])
def test_state_size_is_exact_and_constant(latent_mode):
    block = _block(d_model=32, topk=5, latents=3, latent_mode=latent_mode)
    # three top-k tables; reading the prefix adds each latent's running sum (32) and its weight (1)
    expected = 3 * 5 * 32 + (3 * 33 if latent_mode == "prefix" else 0)
    assert block.state_size(0) == block.state_size(1) == block.state_size(10_000) == expected
    for seq in (1, 3, 5, 12):
        cache = block.allocate_cache(3)
        with torch.no_grad():
            block(_x(3, seq), cache)
        assert cache.numel_per_sequence() == block.state_size(seq)
    # the latent tokens are parameters, not state
    assert sum(t[0].numel() for t in cache.values()) == expected


def test_ties_go_to_the_earlier_token():
    """Equal values everywhere: token t's rank is t (every earlier equal token wins), and the top-k rows are
    taken from the first k tokens (the gradient of the top rows lands there and nowhere else)."""
    k, C = 3, 4
    values = torch.ones(1, 10, 2, dtype=torch.float64, requires_grad=True)
    carry = torch.full((1, k, 2), float("-inf"), dtype=torch.float64)
    ranks, top = [], None
    for c0 in range(0, 10, C):
        top, rank = running_topk_chunk(carry, values[:, c0: c0 + C], c0)
        ranks.append(rank)
        carry = top[:, -1]
    rank = torch.cat(ranks, dim=1)[0, :, 0]
    assert rank.tolist() == [0, 1, 2, 3, 3, 3, 3, 3, 3, 3]  # k = 3 means "not in the top-k"
    top[:, -1].sum().backward()
    assert values.grad[0, :, 0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]


@pytest.mark.parametrize("chunk_size", [1, 4, 25])
def test_running_top_k_matches_a_brute_force_ranking_with_many_ties(chunk_size):
    k, T, D = 4, 25, 3
    values = torch.randint(0, 4, (2, T, D), generator=torch.Generator().manual_seed(3)).double()
    carry = torch.full((2, k, D), float("-inf"), dtype=torch.float64)
    tops, ranks = [], []
    for c0 in range(0, T, chunk_size):
        top, rank = running_topk_chunk(carry, values[:, c0: c0 + chunk_size], c0)
        tops.append(top)
        ranks.append(rank)
        carry = top[:, -1]
    top, rank = torch.cat(tops, 1), torch.cat(ranks, 1)
    for t in range(T):
        beaten_by = (values[:, :t] >= values[:, t: t + 1]).sum(1)  # earlier tokens that are larger or equal
        assert torch.equal(rank[:, t], beaten_by.clamp(max=k))
        n = min(t + 1, k)
        assert torch.equal(top[:, t, :n], values[:, : t + 1].sort(1, descending=True).values[:, :n])


def test_float64_and_bfloat16_run_and_decode():
    for dtype in (torch.float64, torch.bfloat16):
        block = _block(dtype=dtype, topk=3, chunk_size=4)
        x = _x(1, 9, dtype=dtype)
        with torch.no_grad():
            y = block(x)
            cache = block.allocate_cache(1, dtype=dtype)
            steps = torch.cat([block(x[:, t: t + 1], cache) for t in range(9)], 1)
        assert y.dtype == steps.dtype == dtype and torch.isfinite(steps).all()
        tolerance = F64 if dtype == torch.float64 else dict(rtol=5e-2, atol=5e-2)
        torch.testing.assert_close(steps.double(), y.double(), **tolerance)


@pytest.mark.parametrize("bad,named", [
    ({"latents": 0}, "0"), ({"topk": -2}, "-2"), ({"num_heads": 3}, "num_heads=3"), ({"chunk_size": 1.5}, "1.5"),
    ({"latent_output": "max"}, "'max'"), ({"output_projection": "yes"}, "'yes'"), ({"topk": True}, "True"),
    ({"latent_mode": "cls"}, "'cls'"),
])
def test_bad_arguments_raise_value_error_naming_the_value(bad, named):
    with pytest.raises(ValueError) as error:
        Co4(32, **bad)
    assert named in str(error.value) and list(bad)[0] in str(error.value)


def test_bad_state_size_argument():
    with pytest.raises(ValueError, match="-1"):
        Co4(32).state_size(-1)


@pytest.mark.parametrize("config", ["co4", "co4_static", "co4_babylm", "conv_co4"])
def test_model_configs_build_and_generate(config):
    spec = yaml.safe_load((CONFIGS / f"{config}.yaml").read_text())
    torch.manual_seed(0)
    spec["d_model"] = 32  # the configs' layers at a test width
    model = LM(vocab_size=50, **spec).double()
    prompt = torch.randint(0, 50, (2, 6))
    generated = model.generate(prompt, max_new_tokens=4)
    # greedy decoding through the caches equals greedy argmax of the parallel forward
    with torch.no_grad():
        logits = model(generated[:, :-1])
    assert torch.equal(logits[:, 5:].argmax(-1), generated[:, 6:])
    co4_layers = [layer.mixer for layer in model.layers if isinstance(layer.mixer, Co4)]
    assert co4_layers, "the config has a Co4 layer"
    if config == "co4_babylm":  # the BabyLM shape: one layer, two heads, no MLP
        assert len(model.layers) == 1 and co4_layers[0].num_heads == 2 and model.layers[0].mlp is None


@pytest.mark.parametrize("latent_mode", ["prefix", "static"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_repeated_inputs_decode_like_the_parallel_forward(dtype, latent_mode):
    """Repeated tokens tie exactly in the parallel forward: under static latents a repeat is the same value, and
    latents that read the prefix tie too where the prefix repeats its token proportions (0 1 0 2 and
    0 1 0 2 1 0 0 2 read the same weighted mean). One-token decode steps compute those values with other
    rounding (another matrix shape; running sums instead of a cumulative sum), an ulp apart; the rounded ranking
    key keeps the tie, so the ranks agree."""
    block = _block(dtype=dtype, topk=4, chunk_size=8, latent_mode=latent_mode)
    vocabulary = _x(1, 3, dtype=dtype)[0]
    x = vocabulary[torch.tensor([[0, 1, 0, 2, 1, 0, 0, 2, 1, 1, 0, 2, 2, 0]])]
    with torch.no_grad():
        expected = block(x)
        cache = block.allocate_cache(1, dtype=dtype)
        steps = torch.cat([block(x[:, :3], cache)] + [block(x[:, t: t + 1], cache) for t in range(3, 14)], 1)
    tolerance = F64 if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(steps, expected, **tolerance)


def _jacobian_blocks(block, x):
    """|d y_t / d x_s| summed over channels: (T, T), row t, column s."""
    jac = torch.autograd.functional.jacobian(lambda inp: block(inp)[0], x)   # (T, D, 1, T, D)
    return jac.abs().sum(dim=(1, 2, 4))


def test_earlier_tokens_reach_later_outputs_through_the_latents():
    """With static latents token s < t reaches output t only through the top-k rows it occupies; where it occupies
    none (its gradient into y_t is exactly 0), latents that read the prefix still carry it. Static weights are
    the same parameters, so the difference is the latent path alone."""
    hyper = dict(d_model=8, latents=2, topk=1, num_heads=2, chunk_size=4)
    x = _x(1, 12, d=8, seed=5)
    static = _jacobian_blocks(_block(latent_mode="static", **hyper), x)
    prefix = _jacobian_blocks(_block(latent_mode="prefix", **hyper), x)
    earlier = torch.ones(12, 12, dtype=torch.bool).tril(-1)
    unreached = earlier & (static == 0)
    assert unreached.sum() >= 5, "the test needs tokens that static Co4 does not carry to later outputs"
    assert (prefix[unreached] > 1e-6).all()
    assert (prefix.triu(1) == 0).all() and (static.triu(1) == 0).all()         # and both stay causal


def test_latents_read_a_normalised_running_sum_of_the_prefix():
    """Each latent's rows at step t are its token's plus the weighted mean of the tokens' projections s <= t; a
    change at s moves the latents from s on, never before; static latents never move."""
    block = _block(latents=3)
    x = _x(2, 10)
    changed = x.clone()
    changed[:, 4] += 1
    with torch.no_grad():
        latent, latent_changed = (torch.cat(block.modulate(inp)[1], dim=-1) for inp in (x, changed))
    assert latent.shape == (2, 10, 3, 96)
    torch.testing.assert_close(latent_changed[:, :4], latent[:, :4], **F64)
    assert (latent_changed[:, 4:] - latent[:, 4:]).abs().amax(dim=(2, 3)).min() > 1e-6
    static = _block(latents=3, latent_mode="static")
    with torch.no_grad():
        assert [part.shape for part in static.modulate(x)[1]] == [(1, 1, 3, 32)] * 3


@pytest.mark.parametrize("latent_mode", ["prefix", "static"])
def test_auto_uses_the_chunked_path_without_the_compiled_kernel(monkeypatch, latent_mode):
    """No C compiler (or ZOO_NATIVE=0): "auto" on CPU runs the chunked PyTorch path, with the same results."""
    block = _block(topk=3, chunk_size=4, latent_mode=latent_mode)
    x = _x(2, 11)
    expected = block(x)
    monkeypatch.setattr(cpu, "available", lambda: False)
    monkeypatch.setattr(cpu_mix, "available", lambda: False)
    monkeypatch.setattr(cpu, "running_topk_cpu", lambda *a, **kw: pytest.fail("the kernel ran"))
    monkeypatch.setattr(co4_module, "co4_mix_cpu", lambda *a, **kw: pytest.fail("the fused kernel ran"))
    monkeypatch.setattr(co4_module, "co4_latent_cpu", lambda *a, **kw: pytest.fail("the latent kernel ran"))
    torch.testing.assert_close(block(x), expected, **F64)


# ---- the fused CPU path (ops/co4/cpu_mix.py: the latent rows, the running top-k and the small attention compiled) ----
FUSED_SETTINGS = SETTINGS + [
    ({"latents": 3, "topk": 4, "num_heads": 2, "latent_mode": "static", "latent_output": "none"}, 9),
    ({"latents": 2, "topk": 6, "num_heads": 1}, 1),                     # one token
    ({"latents": 5, "topk": 3, "num_heads": 8}, 40),                    # head_dim 4: the kernel's generic head size
]


def _spy(monkeypatch):
    """Counts the compiled kernels' calls in the block (so a test knows the fused path ran)."""
    calls = {"mix": 0, "latent": 0}

    def counted(name, fn):
        def call(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return call
    monkeypatch.setattr(co4_module, "co4_mix_cpu", counted("mix", co4_module.co4_mix_cpu))
    monkeypatch.setattr(co4_module, "co4_latent_cpu", counted("latent", co4_module.co4_latent_cpu))
    return calls


@pytest.mark.parametrize("hyper,seq", FUSED_SETTINGS, ids=lambda v: str(v) if isinstance(v, int) else None)
def test_fused_cpu_path_equals_the_pytorch_path(hyper, seq, monkeypatch):
    """backend="auto" on CPU (the compiled kernels) == backend="reference" (PyTorch): outputs and every gradient,
    ragged lengths (shorter than k, not a multiple of anything), each latent mode and latent output."""
    calls = _spy(monkeypatch)
    fused, reference = _block(backend="auto", **hyper), _block(backend="reference", **hyper)
    x, weights = _x(3, seq, seed=11), _x(3, seq, seed=12)
    y, dx, grads = _outputs_and_grads(fused, fused, x, weights)
    y_ref, dx_ref, grads_ref = _outputs_and_grads(reference, reference, x, weights)
    assert calls["mix"] == 1 and calls["latent"] == (hyper.get("latent_mode", "prefix") == "prefix")
    torch.testing.assert_close(y, y_ref, **F64)
    torch.testing.assert_close(dx, dx_ref, **F64)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, grads_ref[name], **F64, msg=lambda m, n=name: f"grad of {n}: {m}")


@pytest.mark.parametrize("latent_mode", ["prefix", "static"])
def test_fused_cpu_path_equals_the_pytorch_path_in_float32(latent_mode, monkeypatch):
    """The training dtype at the CPU preset's knobs (8 latents, top-12, 2 heads of 32): to float32 rounding."""
    calls = _spy(monkeypatch)
    hyper = dict(d_model=64, latents=8, topk=12, num_heads=2, latent_mode=latent_mode, dtype=torch.float32)
    fused, reference = _block(backend="auto", **hyper), _block(backend="reference", **hyper)
    x, weights = _x(4, 37, d=64, seed=3, dtype=torch.float32), _x(4, 37, d=64, seed=4, dtype=torch.float32)
    y, dx, grads = _outputs_and_grads(fused, fused, x, weights)
    y_ref, dx_ref, grads_ref = _outputs_and_grads(reference, reference, x, weights)
    assert calls["mix"] == 1
    tolerance = dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y, y_ref, **tolerance)
    torch.testing.assert_close(dx, dx_ref, **tolerance)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, grads_ref[name], **tolerance, msg=lambda m, n=name: f"grad of {n}: {m}")


@pytest.mark.parametrize("latent_mode", ["prefix", "static"])
def test_fused_cpu_path_with_packed_documents(latent_mode, monkeypatch):
    """seq_idx: ragged documents packed in rows give the PyTorch path's outputs and gradients."""
    calls = _spy(monkeypatch)
    seq_idx = torch.tensor([[0] * 5 + [1] + [2] * 9, [4] * 11 + [5] * 4])
    fused, reference = (_block(backend=b, topk=4, latents=3, latent_mode=latent_mode) for b in ("auto", "reference"))
    x, weights = _x(2, 15, seed=5), _x(2, 15, seed=6)
    y, dx, grads = _outputs_and_grads(lambda inp: fused(inp, seq_idx=seq_idx), fused, x, weights)
    y_ref, dx_ref, grads_ref = _outputs_and_grads(lambda inp: reference(inp, seq_idx=seq_idx), reference, x, weights)
    assert calls["mix"] == 1
    torch.testing.assert_close(y, y_ref, **F64)
    torch.testing.assert_close(dx, dx_ref, **F64)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, grads_ref[name], **F64, msg=lambda m, n=name: f"grad of {n}: {m}")


@pytest.mark.parametrize("latent_mode", ["prefix", "static"])
def test_fused_cpu_path_continues_a_cache_like_the_pytorch_path(latent_mode):
    """A prefill, then a second chunk on the cache: the kernel starts from the cache's tables (initial_count < k and
    = k) and leaves the same tables as the PyTorch path."""
    hyper = dict(topk=5, latents=2, latent_mode=latent_mode)
    fused, reference = _block(backend="auto", **hyper), _block(backend="reference", **hyper)
    x = _x(2, 16, seed=8)
    for split in (3, 9):
        caches = [block.allocate_cache(2) for block in (fused, reference)]
        with torch.no_grad():
            outs = [[block(x[:, :split], cache), block(x[:, split:], cache)]
                    for block, cache in zip((fused, reference), caches)]
        for got, want in zip(*outs):
            torch.testing.assert_close(got, want, **F64)
        for name in CACHE_NAMES + (("read_sum", "read_weight") if latent_mode == "prefix" else ()):
            torch.testing.assert_close(caches[0][name], caches[1][name], **F64)
