"""Retrieval for hierarchical memories: embed documents, cluster them into a balanced k-means tree, and look up
a context's path (the memory blocks it fetches) by greedy descent."""
from zoo.retrieval.embedders import Embedder, MiniLMEmbedder, TokenEmbedder, build_embedder
from zoo.retrieval.tree import MemoryTree, build_tree
