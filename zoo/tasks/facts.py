"""``task=facts``: long-tail factual knowledge, for hierarchical memories.

World: ``num_topics`` topics, each with ``names_per_topic`` entities; an entity is written as two tokens
(its topic's family token, then a name token shared across topics), so its name tells its topic, as a real
name tells its domain. Every entity has ``num_attributes`` attributes, each with a fixed value drawn from that
attribute's own ``values_per_attribute`` value tokens.

Training corpus: ``num_documents`` documents, each ``[BOS] (family name attribute value) x facts_per_document``
about one topic: the first entity is drawn from a Zipf law (exponent ``zipf_exponent``) over all entities, the
others from the same law restricted to that topic, the attributes uniformly. Popularity ranks are interleaved
over topics (every topic has popular and rare entities). So mention frequency is long-tailed and documents are
grouped by topic. Documents are embedded (``embedder``), clustered into the
balanced k-means tree (``levels`` x ``branching``), and the documents of one leaf are packed together into
training sequences of ``seq_len`` tokens; each sequence carries its leaf's path as ``memory_path`` (with
probability ``generic_probability``, the generic memory's path instead: co-training).

Probes: ``[BOS] family name attribute`` -> value, scored on the value only, for facts seen in training.
Their ``memory_path`` is looked up from the prompt alone (greedy descent of the tree), as at inference.
Slices are frequency buckets (how often the fact occurs in the training corpus, ``bucket_edges``); test and
validation probes are disjoint facts of each bucket, drawn with their own seeds.
"""
import math

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from zoo.checks import require_package, require_positive_int
from zoo.retrieval.embedders import build_embedder
from zoo.retrieval.tree import build_tree, leaf_index
from zoo.tasks.data import ResumableTrainOrder, SegmentBatchSampler, collate_batch
from zoo.tasks.data import IGNORE_INDEX

PAD, BOS = 0, 1
PROMPT_LEN = 4  # BOS family name attribute


class FactWorld:
    """Token layout, the fact table and decoding to text (for a text embedder)."""

    def __init__(self, num_topics: int, names_per_topic: int, num_attributes: int, values_per_attribute: int,
                 seed: int):
        self.num_topics, self.names_per_topic = num_topics, names_per_topic
        self.num_attributes, self.values_per_attribute = num_attributes, values_per_attribute
        self.family0 = 2
        self.name0 = self.family0 + num_topics
        self.attribute0 = self.name0 + names_per_topic
        self.value0 = self.attribute0 + num_attributes
        self.vocab_size = self.value0 + num_attributes * values_per_attribute
        self.num_entities = num_topics * names_per_topic
        rng = np.random.default_rng(seed)
        # entity e = topic * names_per_topic + name; value token of (e, a)
        choice = rng.integers(0, values_per_attribute, size=(self.num_entities, num_attributes))
        self.values = self.value0 + np.arange(num_attributes)[None, :] * values_per_attribute + choice

    def entity_tokens(self, entity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.family0 + entity // self.names_per_topic, self.name0 + entity % self.names_per_topic

    def decode(self, token_ids) -> str:
        words = []
        for t in torch.as_tensor(token_ids).tolist():
            if t in (PAD, BOS):
                continue
            if t < self.name0:
                words.append(f"family{t - self.family0}")
            elif t < self.attribute0:
                words.append(f"name{t - self.name0}")
            elif t < self.value0:
                words.append(f"attribute{t - self.attribute0}")
            else:
                a, v = divmod(t - self.value0, self.values_per_attribute)
                words.append(f"value{a}_{v}")
        return " ".join(words)


def bucket_name(low: int, high: float) -> str:
    return f"freq{low}+" if math.isinf(high) else f"freq{low}-{int(high) - 1}"


class FactsDataModule(ResumableTrainOrder, L.LightningDataModule):
    monitor = ("val/acc", "max")
    model_inputs = ("memory_path",)  # batch entries for the model besides input_ids (zoo.train checks MLPs read them)

    def __init__(self, num_topics: int = 16, names_per_topic: int = 32, num_attributes: int = 8,
                 values_per_attribute: int = 16, num_documents: int = 4000, facts_per_document: int = 6,
                 zipf_exponent: float = 1.0, seq_len: int = 64, levels: int = 2, branching: int = 4,
                 balance: float = 1.5, generic_probability: float = 1 / 17, embedder: str = "tokens",
                 embed_dim: int = 64, bucket_edges=(1, 2, 4, 8, 16), probes_per_bucket: int = 200,
                 batch_size: int = 32, seed: int = 0, num_workers: int = 0, name: str = "facts"):
        super().__init__()
        for key, value in (("num_topics", num_topics), ("names_per_topic", names_per_topic),
                           ("num_attributes", num_attributes), ("values_per_attribute", values_per_attribute),
                           ("num_documents", num_documents), ("facts_per_document", facts_per_document),
                           ("seq_len", seq_len), ("probes_per_bucket", probes_per_bucket),
                           ("batch_size", batch_size)):
            require_positive_int(key, value, "facts")
        if not zipf_exponent >= 0:
            raise ValueError(f"facts: zipf_exponent must be >= 0, got {zipf_exponent!r}")
        if not 0 <= generic_probability < 1:
            raise ValueError(f"facts: generic_probability must be in [0, 1), got {generic_probability!r}")
        edges = [int(e) for e in bucket_edges]
        if not edges or edges[0] < 1 or any(a >= b for a, b in zip(edges, edges[1:])):
            raise ValueError(f"facts: bucket_edges must be increasing integers >= 1, got {list(bucket_edges)!r}")
        require_package("sklearn", "scikit-learn", "task=facts (k-means for the memory tree)", "memory")
        if embedder == "minilm":  # before the corpus is built, not after
            require_package("sentence_transformers", "sentence-transformers", "task.embedder=minilm",
                            "memory-embedder", instead="task.embedder=tokens")
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.seq_len, self.levels, self.branching = seq_len, levels, branching
        self.world = FactWorld(num_topics, names_per_topic, num_attributes, values_per_attribute, seed)
        self.vocab_size = self.world.vocab_size
        self.embedder = build_embedder(embedder, self.vocab_size, embed_dim, seed, decode=self.world.decode)
        rng = np.random.default_rng(seed + 1)
        documents, facts = self._documents(rng, num_documents, facts_per_document, zipf_exponent)
        self.tree, doc_paths = build_tree(self.embedder.embed([torch.from_numpy(d) for d in documents]),
                                          branching, levels, balance, seed)
        self.train_set, home_leaf, self.fact_counts = self._pack(documents, facts, doc_paths, generic_probability,
                                                                  np.random.default_rng(seed + 2))
        self.buckets = self._buckets(edges)
        test, validation = self._probe_facts(probes_per_bucket)
        self.test_sets = [self._probes(f, home_leaf) for f in test]
        self.val_sets = [self._probes(f, home_leaf) for f in validation]

    # ---- corpus ----------------------------------------------------------------------------------------------
    def _documents(self, rng, num_documents: int, per_document: int, exponent: float):
        world = self.world
        # popularity ranks interleaved over topics (the i-th most popular entity is in topic i mod num_topics), so
        # every topic has its popular and its rare entities and topics carry similar mass
        within = np.stack([rng.permutation(world.names_per_topic) for _ in range(world.num_topics)])
        rank = (within * world.num_topics + rng.permutation(world.num_topics)[:, None]).reshape(-1)
        weight = 1.0 / (rank + 1.0) ** exponent
        topic_of = np.arange(world.num_entities) // world.names_per_topic
        first = rng.choice(world.num_entities, size=num_documents, p=weight / weight.sum())
        documents, facts = [], []
        for entity in first:
            members = np.flatnonzero(topic_of == topic_of[entity])
            w = weight[members]
            others = rng.choice(members, size=per_document - 1, p=w / w.sum())
            entities = np.concatenate([[entity], others])
            attributes = rng.integers(0, world.num_attributes, size=per_document)
            family, name = world.entity_tokens(entities)
            body = np.stack([family, name, world.attribute0 + attributes, world.values[entities, attributes]], 1)
            documents.append(np.concatenate([[BOS], body.reshape(-1)]).astype(np.int64))
            facts.append(entities * world.num_attributes + attributes)
        return documents, facts

    def _pack(self, documents, facts, doc_paths, generic_probability, rng):
        """Sequences of seq_len + 1 tokens, each from one leaf's documents; counts of each fact, in all and per leaf."""
        leaves = leaf_index(doc_paths, self.branching).numpy()
        num_facts = self.world.num_entities * self.world.num_attributes
        per_leaf = np.zeros((num_facts, self.branching ** self.levels), dtype=np.int64)
        inputs, labels, paths = [], [], []
        width = self.seq_len + 1
        for leaf in range(self.branching ** self.levels):
            members = np.flatnonzero(leaves == leaf)
            for d in members:
                np.add.at(per_leaf[:, leaf], facts[d], 1)
            stream = np.concatenate([documents[d] for d in members])
            chunks = math.ceil(len(stream) / width)
            padded = np.full(chunks * width, PAD, dtype=np.int64)
            padded[:len(stream)] = stream
            rows = padded.reshape(chunks, width)
            target = rows[:, 1:].copy()
            target[target == PAD] = IGNORE_INDEX
            inputs.append(rows[:, :-1])
            labels.append(target)
            paths.append(np.repeat(doc_paths[members[0]].numpy()[None], chunks, 0))
        inputs, labels, paths = map(np.concatenate, (inputs, labels, paths))
        generic = rng.random(len(paths)) < generic_probability
        paths[generic] = -1
        data = {"input_ids": torch.from_numpy(inputs), "labels": torch.from_numpy(labels),
                "memory_path": torch.from_numpy(paths)}
        return data, per_leaf.argmax(1), per_leaf.sum(1)

    # ---- probes ----------------------------------------------------------------------------------------------
    def _buckets(self, edges: list[int]) -> list[tuple[int, float]]:
        bounds = list(zip(edges, edges[1:] + [math.inf]))
        for low, high in bounds:
            if ((self.fact_counts >= low) & (self.fact_counts < high)).sum() < 2:
                raise ValueError(f"facts: fewer than 2 facts occur {bucket_name(low, high)[4:]} times in training; "
                                 f"change bucket_edges or num_documents")
        return bounds

    def _probe_facts(self, per_bucket: int):
        """Disjoint test and validation facts per bucket: test drawn with seed + 3, validation with seed + 4."""
        test, validation = [], []
        for low, high in self.buckets:
            facts = np.flatnonzero((self.fact_counts >= low) & (self.fact_counts < high))
            chosen = np.random.default_rng(self.seed + 3).permutation(facts)[:min(per_bucket, len(facts) // 2)]
            rest = np.setdiff1d(facts, chosen)
            test.append(np.sort(chosen))
            validation.append(np.sort(np.random.default_rng(self.seed + 4).permutation(rest)[:per_bucket]))
        return test, validation

    def _probes(self, facts: np.ndarray, home_leaf: np.ndarray) -> dict:
        world = self.world
        entities, attributes = facts // world.num_attributes, facts % world.num_attributes
        family, name = world.entity_tokens(entities)
        prompt = np.stack([np.full_like(family, BOS), family, name, world.attribute0 + attributes], 1)
        labels = np.full_like(prompt, IGNORE_INDEX)
        labels[:, -1] = world.values[entities, attributes]  # scored exactly at the answer position
        prompt = torch.from_numpy(prompt)
        paths = self.tree.lookup(self.embedder.embed(list(prompt)))  # from the prompt alone
        at_home = leaf_index(paths, self.branching).numpy() == home_leaf[facts]
        return {"input_ids": prompt, "labels": torch.from_numpy(labels), "memory_path": paths,
                "path_at_home": torch.from_numpy(at_home)}

    # ---- the DataModule conventions ------------------------------------------------------------------------
    @property
    def slice_keys(self) -> list[str]:
        return [bucket_name(low, high) for low, high in self.buckets]

    def describe_slices(self) -> list[dict]:
        """Per bucket: its occurrence range, the probes, and how many prompts descend to their fact's main leaf."""
        return [{"slice": key, "input_seq_len": PROMPT_LEN, "min_count": low,
                 "max_count": None if math.isinf(high) else int(high) - 1, "num_probes": len(probes["labels"]),
                 "path_at_home": float(probes["path_at_home"].float().mean())}
                for key, (low, high), probes in zip(self.slice_keys, self.buckets, self.test_sets)]

    def setup(self, stage: str | None = None):
        pass  # everything is built in __init__: the slices depend on the corpus

    def train_dataloader(self):
        sampler = self.train_sampler([0, len(self.train_set["input_ids"])], self.batch_size, self.seed)
        return DataLoader(_Rows(self.train_set), batch_sampler=sampler, collate_fn=collate_batch,
                          num_workers=self.num_workers)

    def _loaders(self, sets):
        return [DataLoader(_Rows(s), batch_sampler=SegmentBatchSampler([0, len(s["labels"])], self.batch_size,
                                                                        shuffle=False),
                           collate_fn=collate_batch, num_workers=self.num_workers) for s in sets]

    def val_dataloader(self):
        return self._loaders(self.val_sets)

    def test_dataloader(self):
        return self._loaders(self.test_sets)


class _Rows(torch.utils.data.Dataset):
    """Batches of rows of the model inputs (diagnostic columns such as path_at_home stay out)."""

    KEYS = ("input_ids", "labels", "memory_path")

    def __init__(self, data: dict):
        self.data = {k: data[k] for k in self.KEYS}

    def __len__(self) -> int:
        return len(self.data["labels"])

    def __getitems__(self, indices: list[int]) -> dict:
        rows = torch.as_tensor(indices)
        return {k: v[rows] for k, v in self.data.items()}
