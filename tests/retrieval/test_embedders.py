"""Embedders: the token-table default and, when its optional packages are installed, all-MiniLM-L6-v2."""
import importlib.util

import pytest
import torch

from zoo.model import LM
from zoo.retrieval.embedders import MiniLMEmbedder, TokenEmbedder, build_embedder


def test_token_embedder_is_the_normalised_mean_of_the_table_rows():
    table = torch.randn(10, 4)
    embedder = TokenEmbedder(table)
    vectors = embedder.embed([torch.tensor([1, 2, 2]), [7]])
    expected = torch.stack([(table[1] + 2 * table[2]) / 3, table[7]])
    torch.testing.assert_close(vectors, torch.nn.functional.normalize(expected, dim=1))


def test_token_embedder_from_the_anchor_uses_its_embedding_table():
    lm = LM(20, d_model=8, n_layers=1, layers=["short_conv"])
    vectors = TokenEmbedder.from_lm(lm).embed([[3]])
    torch.testing.assert_close(vectors[0], torch.nn.functional.normalize(lm.embedding.weight[3].detach(), dim=0))


def test_random_token_embedder_is_seeded():
    a = build_embedder("tokens", 30, dim=8, seed=1).embed([[1, 2, 3]])
    b = build_embedder("tokens", 30, dim=8, seed=1).embed([[1, 2, 3]])
    c = build_embedder("tokens", 30, dim=8, seed=2).embed([[1, 2, 3]])
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_embedder_inputs_fail_in_one_line():
    with pytest.raises(ValueError, match="known embedders: tokens, minilm"):
        build_embedder("bert", 10)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 10\)"):
        TokenEmbedder.random(10, 4).embed([[12]])


HAVE_MINILM = all(importlib.util.find_spec(m) for m in ("sentence_transformers", "all_minilm_l6_v2"))


@pytest.mark.skipif(not HAVE_MINILM, reason='all-MiniLM-L6-v2 is optional: pip install -e ".[memory-embedder]"')
def test_minilm_embeds_text_into_normalised_384_d_vectors_that_group_by_meaning():
    embedder = MiniLMEmbedder(decode=lambda ids: " ".join(f"w{int(i)}" for i in ids))
    vectors = embedder.embed(["The cat sat on the mat.", "A kitten rested on the rug.", "Stock markets fell sharply."])
    assert vectors.shape == (3, 384)
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(3))
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] and similarity[0, 1] > similarity[1, 2]
    assert embedder.embed([torch.tensor([1, 2])]).shape == (1, 384)  # token ids go through decode
