"""The balanced k-means tree: deterministic, balanced within its bound, lookups consistent with the build."""
import math

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")  # CI installs it (the memory extra); without it the tree cannot be built

from zoo.retrieval.tree import balanced_kmeans, build_tree, leaf_index


def clustered(n=600, dim=16, groups=5, seed=0, skew=True):
    """Normalised points around a few centres, groups of very unequal size (so balancing has work to do)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(groups, dim, generator=generator) * 3
    weights = torch.tensor([2.0 ** -g for g in range(groups)]) if skew else torch.ones(groups)
    owner = torch.multinomial(weights, n, replacement=True, generator=generator)
    return torch.nn.functional.normalize(centres[owner] + torch.randn(n, dim, generator=generator), dim=1)


def test_the_tree_is_deterministic():
    points = clustered()
    tree_a, paths_a = build_tree(points, branching=4, levels=2, seed=3)
    tree_b, paths_b = build_tree(points, branching=4, levels=2, seed=3)
    assert torch.equal(paths_a, paths_b)
    for a, b in zip(tree_a.centroids, tree_b.centroids):
        assert torch.equal(a, b)
    assert torch.equal(tree_a.lookup(points), tree_b.lookup(points))


@pytest.mark.parametrize("balance", [1.5, 1.2])
def test_every_node_is_balanced_within_the_bound_and_non_empty(balance):
    points = clustered(n=700, groups=4)
    branching, levels = 4, 2
    _, paths = build_tree(points, branching=branching, levels=levels, balance=balance, seed=0)
    parents = torch.zeros(len(points), dtype=torch.long)
    for level in range(levels):
        children = parents * branching + paths[:, level]
        for parent in parents.unique():
            inside = children[parents == parent]
            sizes = torch.bincount(inside - parent * branching, minlength=branching)
            assert sizes.min() > 0
            assert sizes.max() <= math.ceil(balance * len(inside) / branching), (level, sizes.tolist())
        parents = children
    # the skewed data is far from balanced: plain k-means' largest root cluster breaks the bound
    from sklearn.cluster import KMeans
    plain = np.bincount(KMeans(4, n_init=3, random_state=0).fit_predict(points.numpy()))
    assert plain.max() > math.ceil(balance * 700 / 4), "the test data must need balancing"


def test_balanced_kmeans_respects_its_bound_on_a_lopsided_set():
    points = np.concatenate([np.zeros((90, 2)), np.ones((10, 2))]) + np.random.default_rng(0).normal(0, 0.01, (100, 2))
    labels = balanced_kmeans(points, 4, 1.5, seed=0)
    sizes = np.bincount(labels, minlength=4)
    assert sizes.min() > 0 and sizes.max() <= math.ceil(1.5 * 100 / 4)


def test_lookup_descends_to_the_nearest_child_at_each_level():
    points = clustered(n=400, groups=8, skew=False)
    tree, paths = build_tree(points, branching=2, levels=3, seed=0)
    queries = clustered(n=50, groups=8, seed=9, skew=False)
    looked_up = tree.lookup(queries)
    node = torch.zeros(50, dtype=torch.long)
    for level in range(3):
        first, second = tree.centroids[level][node * 2], tree.centroids[level][node * 2 + 1]
        nearer = ((queries - second).norm(dim=1) < (queries - first).norm(dim=1)).long()
        assert torch.equal(looked_up[:, level], nearer)
        node = node * 2 + nearer
    # documents of well-separated groups mostly look up their own leaf
    assert (leaf_index(tree.lookup(points), 2) == leaf_index(paths, 2)).float().mean() > 0.7


def test_too_few_documents_fail_with_the_reason():
    with pytest.raises(ValueError, match="at least branching\\*\\*levels = 16"):
        build_tree(torch.randn(10, 4), branching=4, levels=2)
    with pytest.raises(ValueError, match="balance must be >= 1"):
        build_tree(torch.randn(40, 4), branching=2, levels=1, balance=0.5)
