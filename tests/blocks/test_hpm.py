"""HierarchicalMemoryFFN: zero-initialised memory, per-path fetch, sparse gradients, the sparse optimizer step,
cached decoding with the memory attached, and the trunk's handling of memory paths."""
import copy

import pytest
import torch

from zoo.blocks.hpm import HierarchicalMemoryFFN
from zoo.lit import parameter_groups
from zoo.model import LM
from zoo.sparse_adam import SparseBlockAdam, sparse_parameters

VOCAB = 40
HPM = {"name": "hpm", "levels": 2, "branching": 3, "block_sizes": [4, 6]}


def memory_lm(**overrides) -> LM:
    torch.manual_seed(0)
    options = dict(d_model=16, n_layers=2, layers=["short_conv", "attention"], mlp=HPM)
    options.update(overrides)
    return LM(VOCAB, **options)


PATHS = torch.tensor([[0, 1], [2, 2], [-1, -1], [0, 1]])


def test_zero_initialised_memory_leaves_the_anchor_outputs_unchanged():
    model = memory_lm()
    ids = torch.randint(0, VOCAB, (4, 9))
    assert torch.equal(model(ids), model(ids, memory_path=PATHS))
    # the same weights without the bank: an LM whose MLP is the anchor SwiGLU alone
    anchor = LM(VOCAB, d_model=16, n_layers=2, layers=["short_conv", "attention"], mlp={"name": "swiglu"})
    state = {k.replace("mlp.anchor.", "mlp."): v for k, v in model.state_dict().items() if "bank" not in k}
    anchor.load_state_dict(state)
    assert torch.equal(anchor(ids), model(ids, memory_path=PATHS))


def test_a_nonzero_memory_changes_only_the_samples_whose_blocks_changed():
    model = memory_lm()
    ffn = model.layers[0].mlp
    with torch.no_grad():
        ffn.bank_out[1][ffn.block_indices(PATHS[:1])[0, 1]].normal_()  # the level-2 block of path [0, 1]
    ids = torch.randint(0, VOCAB, (4, 9))
    base, memory = model(ids), model(ids, memory_path=PATHS)
    changed = (base - memory).flatten(1).abs().amax(1) > 0
    assert changed.tolist() == [True, False, False, True]


def test_each_sample_gets_its_own_path_blocks():
    """Batched grouped fetch == running each sample alone."""
    ffn = HierarchicalMemoryFFN(16, levels=2, branching=3, block_sizes=[4, 6])
    with torch.no_grad():
        for p in ffn.bank_out:
            p.normal_()
    x = torch.randn(4, 5, 16)
    together = ffn(x, memory_path=PATHS)
    alone = torch.cat([ffn(x[i:i + 1], memory_path=PATHS[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone)


def test_memory_equals_extra_hidden_units_of_one_swiglu():
    """The fetched blocks are hidden units appended to the anchor: W3 [silu(W1 x) * W2 x] over both."""
    ffn = HierarchicalMemoryFFN(8, levels=2, branching=2, block_sizes=[3, 5], expand=2, multiple_of=1)
    with torch.no_grad():
        for p in ffn.bank_out:
            p.normal_()
    path = torch.tensor([[1, 0]])
    rows = ffn.block_indices(path)[0]
    w1 = [ffn.anchor.gate_up_proj.weight[:16]]
    w2 = [ffn.anchor.gate_up_proj.weight[16:]]
    w3 = [ffn.anchor.down_proj.weight]
    for level, r in enumerate([3, 5]):
        block = ffn.bank_in[level][rows[level]].view(2, r, 8)
        w1.append(block[0]), w2.append(block[1])
        w3.append(ffn.bank_out[level][rows[level]].view(8, r))
    w1, w2, w3 = torch.cat(w1), torch.cat(w2), torch.cat(w3, dim=1)
    x = torch.randn(1, 4, 8)
    expected = (torch.nn.functional.silu(x @ w1.T) * (x @ w2.T)) @ w3.T
    torch.testing.assert_close(ffn(x, memory_path=path), expected)


def test_sizes_follow_the_formula():
    model = memory_lm()
    d, layers = 16, 2
    report = model.size_report()
    # bank = sum_l r_l * 3 * d * n_layers * (branching**l + 1 generic block)
    assert report["bank"] == layers * 3 * d * (4 * (3 + 1) + 6 * (9 + 1))
    assert report["fetched"] == layers * 3 * d * (4 + 6)
    assert report["anchor"] == report["parameters"] - report["bank"]
    assert report["active"] == report["anchor"] + report["fetched"]
    assert "bank" not in memory_lm(mlp={"name": "swiglu"}).size_report()


def test_bank_gradients_are_sparse_and_only_on_fetched_rows():
    model = memory_lm()
    model(torch.randint(0, VOCAB, (4, 9)), memory_path=PATHS).square().mean().backward()
    ffn = model.layers[1].mlp
    expected = [{0, 2, 3}, {1, 8, 9}]  # level 1: children 0, 2 and generic; level 2: nodes 0*3+1, 2*3+2, generic
    for level in range(2):
        for param in (ffn.bank_in[level], ffn.bank_out[level]):
            assert param.grad.is_sparse
            assert set(param.grad.coalesce().indices()[0].tolist()) == expected[level]


def optimizer_pair(model, lr=1e-2):
    dense = torch.optim.AdamW(parameter_groups(model, 0.1), lr=lr)
    sparse = SparseBlockAdam(sparse_parameters(model), lr=lr, weight_decay=0.1)
    return dense, sparse


def test_an_optimizer_step_changes_only_the_fetched_blocks_and_the_anchor():
    model = memory_lm()
    dense, sparse = optimizer_pair(model)
    paths = torch.tensor([[0, 1], [0, 1], [2, 0]])
    before = copy.deepcopy(model.state_dict())
    for _ in range(2):  # the second step sees a non-zero W3, so W1/W2 get gradients too
        model(torch.randint(0, VOCAB, (3, 9)), memory_path=paths).square().mean().backward()
        dense.step(), sparse.step()
        dense.zero_grad(), sparse.zero_grad()
    fetched = {0: {0, 2}, 1: {1, 6}}
    for name, value in model.state_dict().items():
        if "bank" not in name:
            assert not torch.equal(value, before[name]) or "norm" in name, f"anchor parameter {name} did not move"
            continue
        level = int(name.rsplit(".", 1)[1])
        moved = (value != before[name]).any(1).nonzero().squeeze(1).tolist()
        assert set(moved) == fetched[level], name
    # optimizer state exists only for the fetched rows
    assert sparse.state_rows() == 2 * 2 * (2 + 2)  # 2 layers x (in, out) x (2 rows at each of 2 levels)


def test_sparse_adam_matches_adamw_on_the_rows_it_updates():
    """On rows fetched at every step, SparseBlockAdam is AdamW (decoupled weight decay) row by row."""
    torch.manual_seed(1)
    weight = torch.nn.Parameter(torch.randn(6, 5))
    reference = torch.nn.Parameter(weight.detach()[[1, 4]].clone())
    sparse = SparseBlockAdam([weight], lr=0.1, betas=(0.9, 0.99), weight_decay=0.05)
    adamw = torch.optim.AdamW([reference], lr=0.1, betas=(0.9, 0.99), weight_decay=0.05)
    untouched = weight.detach()[[0, 2, 3, 5]].clone()
    for _ in range(3):
        target = torch.randn(2, 5)
        torch.nn.functional.embedding(torch.tensor([1, 4]), weight, sparse=True).sub(target).square().sum().backward()
        reference.sub(target).square().sum().backward()
        sparse.step(), adamw.step()
        sparse.zero_grad(), adamw.zero_grad()
    torch.testing.assert_close(weight.detach()[[1, 4]], reference.detach())
    assert torch.equal(weight.detach()[[0, 2, 3, 5]], untouched)


def test_decoding_through_the_caches_equals_the_full_forward_with_the_memory_attached():
    model = memory_lm().eval()
    with torch.no_grad():
        for layer in model.layers:
            for p in layer.mlp.bank_out:
                p.normal_(std=0.1)
    paths = torch.tensor([[1, 2], [-1, -1]])
    ids = torch.randint(0, VOCAB, (2, 12))
    full = model(ids, memory_path=paths)
    assert not torch.allclose(full, model(ids)), "the memory must matter for this test to mean anything"
    caches = model.allocate_cache(2)
    steps = [model(ids[:, :5], caches=caches, memory_path=paths)]
    steps += [model(ids[:, t:t + 1], caches=caches, memory_path=paths) for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    generated = model.generate(ids[:, :5], max_new_tokens=3, memory_path=paths)
    greedy = ids[:, :5]
    for _ in range(3):
        greedy = torch.cat([greedy, model(greedy, memory_path=paths)[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(generated, greedy)


def test_mlps_without_a_memory_ignore_the_path():
    for mlp in ("swiglu", "gelu"):
        model = memory_lm(mlp={"name": mlp})
        ids = torch.randint(0, VOCAB, (4, 9))
        assert torch.equal(model(ids), model(ids, memory_path=PATHS))


@pytest.mark.parametrize("path, message", [
    (torch.tensor([[0, 3]]), r"children in \[0, 3\)"),
    (torch.tensor([[0, -1]]), "or all -1"),
    (torch.tensor([[0, 1, 2]]), r"shape \(batch, 2\)"),
])
def test_bad_paths_fail_naming_the_allowed_values(path, message):
    ffn = HierarchicalMemoryFFN(8, levels=2, branching=3, block_sizes=4)
    with pytest.raises(ValueError, match=message):
        ffn(torch.randn(1, 2, 8), memory_path=path)


def test_bad_block_sizes_fail():
    with pytest.raises(ValueError, match="one size per level"):
        HierarchicalMemoryFFN(8, levels=2, block_sizes=[4, 4, 4])
    with pytest.raises(ValueError, match="positive integer"):
        HierarchicalMemoryFFN(8, levels=1, block_sizes=[0])


def test_litlm_training_steps_only_the_fetched_blocks_with_lazy_state(tmp_path):
    """Through Lightning: LitLM's dense AdamW leaves the bank alone and SparseBlockAdam steps the fetched rows."""
    import lightning as L
    from torch.utils.data import DataLoader

    from zoo.lit import LitLM

    model = memory_lm()
    lit = LitLM(model, slice_keys=["all"], lr=1e-2, weight_decay=0.1)
    ids = torch.randint(0, VOCAB, (3, 9))
    batch = {"input_ids": ids, "labels": ids.roll(-1, dims=1), "memory_path": torch.tensor([[0, 1], [0, 1], [2, 0]])}
    before = copy.deepcopy(model.state_dict())
    trainer = L.Trainer(accelerator="cpu", max_steps=3, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(lit, train_dataloaders=DataLoader([batch] * 3, batch_size=None))
    assert lit.sparse_optimizer is not None
    assert all(id(p) not in {id(q) for q in model.parameters() if getattr(q, "_sparse_grad", False)}
               for group in trainer.optimizers[0].param_groups for p in group["params"])
    for name, value in model.state_dict().items():
        if "bank" in name:
            moved = (value != before[name]).any(1).nonzero().squeeze(1).tolist()
            assert moved == ([0, 2] if name.endswith("0") else [1, 6]), name
    assert lit.sparse_optimizer.state_rows() == 2 * 2 * (2 + 2)
    assert not torch.equal(model.layers[0].mlp.anchor.down_proj.weight, before["layers.0.mlp.anchor.down_proj.weight"])


@pytest.mark.parametrize("memory_layers, expected", [(None, [True, True, True]), ([1], [False, True, False]),
                                                     ([2, 0], [True, False, True]), ([], [False, False, False])])
def test_memory_layers_place_memories_exactly_there(memory_layers, expected):
    model = memory_lm(n_layers=3, memory_layers=memory_layers)
    assert [isinstance(layer.mlp, HierarchicalMemoryFFN) for layer in model.layers] == expected
    # a layer without its memory is the memory's anchor SwiGLU, so every layer has the anchor's width
    widths = {(layer.mlp.anchor if isinstance(layer.mlp, HierarchicalMemoryFFN) else layer.mlp).down_proj.in_features
              for layer in model.layers}
    assert len(widths) == 1
    one = HierarchicalMemoryFFN(16, levels=2, branching=3, block_sizes=[4, 6]).size_report()
    assert model.size_report().get("bank", 0) == one["bank"] * sum(expected)
    ids = torch.randint(0, VOCAB, (4, 9))
    assert model(ids, memory_path=PATHS).shape == (4, 9, VOCAB)


@pytest.mark.parametrize("memory_layers, message", [
    ([3], "memory_layers entry 3 is not a distinct layer index in [0, 2] (n_layers=3)"),
    ([-1], "memory_layers entry -1 is not a distinct layer index in [0, 2]"),
    ([1, 1], "memory_layers entry 1 is not a distinct layer index in [0, 2]"),
    (["1"], "memory_layers entry '1' is not a distinct layer index"),
    (1, "memory_layers must be a list of layer indices in [0, 2], got 1"),
])
def test_bad_memory_layers_name_the_value_and_the_range(memory_layers, message):
    with pytest.raises(ValueError) as error:
        memory_lm(n_layers=3, memory_layers=memory_layers)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_memory_layers_need_a_memory_mlp():
    with pytest.raises(ValueError, match="mlp is 'swiglu', which has no memory"):
        memory_lm(mlp={"name": "swiglu"}, memory_layers=[0])
    with pytest.raises(ValueError, match="mlp is None, which has no memory"):
        memory_lm(mlp=None, memory_layers=[0])
