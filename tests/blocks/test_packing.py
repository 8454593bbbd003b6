"""Packed sequences (seq_idx): for every registered mixer, a row packing several documents equals each document
run on its own (outputs and input gradients, float64 on CPU); the trunk too; and packing's errors."""
import pytest
import torch
from torch import nn

from ops.packing import DocumentLayout, positions_in_document, seq_idx_from_cu_seqlens
from tests.blocks.mixer_cases import D_MODEL, case_id, mixer_cases
from zoo.blocks.base import Mixer
from zoo.blocks.registry import MIXERS, build_mixer
from zoo.model import LM

# two rows of 13 positions: three ragged documents (one of a single token), and two; ids need not start at 0
ROWS = [[5, 1, 7], [9, 4]]


def packed_seq_idx(rows=ROWS) -> torch.Tensor:
    return torch.stack([torch.cat([torch.full((n,), 3 + i) for i, n in enumerate(row)]) for row in rows])


def run_separately(module, x: torch.Tensor, rows=ROWS) -> torch.Tensor:
    """Each document of each row alone, as a batch of one, concatenated back into rows."""
    out = []
    for b, row in enumerate(rows):
        starts = torch.tensor([0] + row).cumsum(0).tolist()
        out.append(torch.cat([module(x[b:b + 1, s:e]) for s, e in zip(starts[:-1], starts[1:])], dim=1))
    return torch.cat(out, dim=0)


@pytest.mark.parametrize("case", mixer_cases(), ids=case_id)
def test_a_packed_row_equals_its_documents_run_separately(case):
    name, hyper = case
    torch.manual_seed(0)
    mixer = build_mixer(name, D_MODEL, backend="reference", **hyper).double()
    seq_idx = packed_seq_idx()
    x = torch.randn(len(ROWS), seq_idx.shape[1], D_MODEL, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(x.shape, dtype=torch.float64)

    packed = mixer(x, seq_idx=seq_idx)
    (grad_packed,) = torch.autograd.grad(packed, x, upstream)
    alone = run_separately(mixer, x)
    (grad_alone,) = torch.autograd.grad(alone, x, upstream)

    # Mamba's scan accumulates in float32 whatever the input dtype; everything else is float64 throughout
    tol = dict(rtol=1e-5, atol=1e-6) if name == "mamba" else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(packed, alone, **tol)
    torch.testing.assert_close(grad_packed, grad_alone, **tol)


@pytest.mark.parametrize("name", sorted(MIXERS))
def test_packing_is_refused_with_a_decoding_cache_and_bad_seq_idx_is_named(name):
    mixer = build_mixer(name, D_MODEL)
    x = torch.randn(1, 4, D_MODEL)
    with pytest.raises(ValueError, match="cannot be combined with a decoding cache"):
        mixer(x, cache=mixer.allocate_cache(1), seq_idx=torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="non-decreasing"):
        mixer(x, seq_idx=torch.tensor([[0, 1, 0, 1]]))
    with pytest.raises(ValueError, match=r"shape \(batch, seq\) = \(1, 4\)"):
        mixer(x, seq_idx=torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tensor"):
        mixer(x, seq_idx=torch.zeros(1, 4))


def test_the_trunk_gives_packed_rows_the_logits_of_their_documents_alone():
    torch.manual_seed(0)
    layers = [{"name": name} for name in sorted(MIXERS)]  # every mixer in one hybrid stack
    model = LM(vocab_size=50, d_model=D_MODEL, n_layers=len(layers), layers=layers, mlp="swiglu").double()
    seq_idx = packed_seq_idx()
    input_ids = torch.randint(0, 50, seq_idx.shape)
    packed = model(input_ids, seq_idx=seq_idx)
    alone = run_separately(model, input_ids)
    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-6)  # Mamba's float32 scan sets the tolerance
    # unpacked, documents do see each other: the test above is not vacuous
    assert not torch.allclose(model(input_ids), alone, rtol=1e-5, atol=1e-6)


class NoPackingMixer(Mixer):
    backends = ("auto",)

    def __init__(self, d_model, layer_idx=0, backend="auto"):
        super().__init__(d_model, layer_idx, backend)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x, cache=None):
        return self.proj(x)


def test_a_mixer_without_seq_idx_works_unpacked_and_is_named_when_packed(monkeypatch):
    monkeypatch.setitem(MIXERS, "no_packing_test", NoPackingMixer)
    model = LM(vocab_size=10, d_model=8, n_layers=1, layers=[{"name": "no_packing_test"}])
    input_ids = torch.randint(0, 10, (1, 6))
    assert model(input_ids).shape == (1, 6, 10)
    with pytest.raises(ValueError, match="mixer NoPackingMixer \\(layer 0\\) does not take seq_idx"):
        model(input_ids, seq_idx=torch.zeros(1, 6, dtype=torch.long))


def test_the_trunk_refuses_packing_while_decoding():
    model = LM(vocab_size=10, d_model=8, n_layers=1)
    with pytest.raises(ValueError, match="cannot be combined with decoding caches"):
        model(torch.zeros(1, 3, dtype=torch.long), caches=model.allocate_cache(1),
              seq_idx=torch.zeros(1, 3, dtype=torch.long))


def test_cu_seqlens_positions_and_the_per_document_layout():
    seq_idx = seq_idx_from_cu_seqlens(torch.tensor([0, 2, 3, 7]))
    assert seq_idx.tolist() == [[0, 0, 1, 2, 2, 2, 2]]
    assert positions_in_document(seq_idx).tolist() == [[0, 1, 0, 0, 1, 2, 3]]
    with pytest.raises(ValueError, match="cu_seqlens"):
        seq_idx_from_cu_seqlens(torch.tensor([1, 3]))
    layout = DocumentLayout(packed_seq_idx())
    x = torch.randn(2, 13, 3)
    rows = layout.unpack(x)
    assert rows.shape == (5, 9, 3)  # five documents, the longest of 9 tokens
    torch.testing.assert_close(rows[1, :1], x[0, 5:6])
    assert not rows[1, 1:].any()  # padding after the document
    torch.testing.assert_close(layout.repack(rows), x)
