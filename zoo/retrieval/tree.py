"""The balanced top-down k-means tree over document embeddings, and path lookup by greedy descent.

Build: the root's documents are split into ``branching`` clusters by k-means (scikit-learn), then balanced:
while a cluster holds more than ``ceil(balance * n / branching)`` documents, or one is empty, the largest
cluster and the smallest are pooled and the pool is cut into two equal halves along the line between its two
2-means centroids (the paper: "a cluster larger than ~1.5x its share is split with the smallest"). Each child
is split the same way, down to ``levels`` levels. So every node holds at most ``ceil(balance * n_parent /
branching)`` of its parent's documents, and none is empty.

A document's training path is the leaf it was placed in (``build_tree`` returns it). A new context's path
(a prompt at inference) is the greedy descent ``MemoryTree.lookup``: at each level, the child whose centroid
(the mean of its documents' embeddings) is nearest.

A path is a row of ``levels`` child indices in [0, branching).
"""
import math
from dataclasses import dataclass

import numpy as np
import torch

from zoo.checks import require_positive_int


def _kmeans(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    try:
        from sklearn.cluster import KMeans
    except ModuleNotFoundError as error:
        raise ImportError('the memory tree needs scikit-learn for k-means: pip install -e ".[memory]"') from error
    return KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(points)


def _halves(points: np.ndarray, seed: int) -> np.ndarray:
    """Split points into two equal halves (0/1 labels) along the axis between their 2-means centroids."""
    labels = _kmeans(points, 2, seed) if len(points) >= 2 else np.zeros(len(points), dtype=int)
    if labels.min() == labels.max():  # identical points: any equal cut will do
        axis = np.zeros(points.shape[1])
    else:
        axis = points[labels == 1].mean(0) - points[labels == 0].mean(0)
    order = np.argsort(points @ axis, kind="stable")
    halves = np.zeros(len(points), dtype=int)
    halves[order[len(points) // 2:]] = 1
    return halves


def balanced_kmeans(points: np.ndarray, k: int, balance: float, seed: int) -> np.ndarray:
    """k-means labels in [0, k) with every cluster non-empty and at most ceil(balance * n / k) points."""
    n = len(points)
    if n < k:
        raise ValueError(f"build_tree: a node holds {n} documents, fewer than its {k} children; use more documents "
                         f"or fewer levels or a smaller branching")
    bound = math.ceil(balance * n / k)
    labels = _kmeans(points, k, seed) if n > k else np.arange(n)
    for attempt in range(4 * n + k):
        sizes = np.bincount(labels, minlength=k)
        if sizes.max() <= bound and sizes.min() > 0:
            return labels
        largest, smallest = int(sizes.argmax()), int(sizes.argmin())
        pool = np.flatnonzero((labels == largest) | (labels == smallest))
        halves = _halves(points[pool], seed + attempt + 1)
        labels[pool] = np.where(halves == 0, largest, smallest)
    raise RuntimeError(f"balanced_kmeans: did not balance {n} points into {k} clusters within the bound {bound}")


@dataclass
class MemoryTree:
    branching: int
    levels: int
    balance: float
    centroids: list[torch.Tensor]  # level l (0-based): (branching**(l+1), dim), node i's children at i*b .. i*b+b-1

    def lookup(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Greedy descent: (n, dim) -> (n, levels) child indices, the nearest child centroid at each level."""
        embeddings = torch.as_tensor(embeddings, dtype=torch.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.centroids[0].shape[1]:
            raise ValueError(f"MemoryTree.lookup: embeddings must be (n, {self.centroids[0].shape[1]}), "
                             f"got {tuple(embeddings.shape)}")
        node = torch.zeros(len(embeddings), dtype=torch.long)
        path = []
        for level in range(self.levels):
            children = node[:, None] * self.branching + torch.arange(self.branching)
            distances = (self.centroids[level][children] - embeddings[:, None]).pow(2).sum(-1)
            choice = distances.argmin(dim=1)
            path.append(choice)
            node = children.gather(1, choice[:, None]).squeeze(1)
        return torch.stack(path, dim=1)


def leaf_index(paths: torch.Tensor, branching: int) -> torch.Tensor:
    """(n, levels) paths -> (n,) leaf numbers in [0, branching**levels)."""
    leaf = torch.zeros(len(paths), dtype=torch.long)
    for level in range(paths.shape[1]):
        leaf = leaf * branching + paths[:, level]
    return leaf


def build_tree(embeddings, branching: int = 16, levels: int = 4, balance: float = 1.5,
               seed: int = 0) -> tuple[MemoryTree, torch.Tensor]:
    """(tree, paths): the tree over (n, dim) embeddings and each document's (n, levels) training path."""
    require_positive_int("branching", branching, "build_tree")
    require_positive_int("levels", levels, "build_tree")
    if branching < 2:
        raise ValueError(f"build_tree: branching must be at least 2, got {branching}")
    if not balance >= 1:
        raise ValueError(f"build_tree: balance must be >= 1 (a cluster may hold balance x its share), got {balance!r}")
    points = np.asarray(torch.as_tensor(embeddings, dtype=torch.float32).numpy(), dtype=np.float64)
    if points.ndim != 2 or len(points) < branching ** levels:
        raise ValueError(f"build_tree: need at least branching**levels = {branching ** levels} documents (one per "
                         f"leaf) as an (n, dim) array, got shape {points.shape}")
    paths = np.zeros((len(points), levels), dtype=np.int64)
    centroids = [np.zeros((branching ** (level + 1), points.shape[1])) for level in range(levels)]
    nodes = [(0, np.arange(len(points)))]  # (node index at this level, its documents)
    for level in range(levels):
        children = []
        for node, members in nodes:
            labels = balanced_kmeans(points[members], branching, balance, seed + level * 7919 + node)
            for child in range(branching):
                inside = members[labels == child]
                index = node * branching + child
                centroids[level][index] = points[inside].mean(0)
                paths[inside, level] = child
                children.append((index, inside))
        nodes = children
    tree = MemoryTree(branching, levels, balance, [torch.tensor(c, dtype=torch.float32) for c in centroids])
    return tree, torch.from_numpy(paths)
