"""task=facts: Zipf frequencies, topic documents packed per leaf, probes scored on the answer, slices per bucket."""
import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from zoo.tasks import build_task
from zoo.tasks.facts import BOS, PROMPT_LEN
from zoo.tasks.mqar import IGNORE_INDEX


@pytest.fixture(scope="module")
def task():
    return build_task("facts", num_topics=4, names_per_topic=16, num_attributes=4, values_per_attribute=8,
                      num_documents=300, facts_per_document=4, seq_len=32, levels=2, branching=2,
                      bucket_edges=[1, 3, 9], probes_per_bucket=30, batch_size=16, seed=1)


def test_slices_are_frequency_buckets_described_in_order(task):
    assert task.slice_keys == ["freq1-2", "freq3-8", "freq9+"]
    rows = task.describe_slices()
    assert [r["slice"] for r in rows] == task.slice_keys
    assert all(r["input_seq_len"] == PROMPT_LEN for r in rows)
    assert [(r["min_count"], r["max_count"]) for r in rows] == [(1, 2), (3, 8), (9, None)]
    assert task.monitor == ("val/acc", "max")


def test_probes_ask_seen_facts_of_their_bucket_and_score_only_the_answer(task):
    world = task.world
    for (low, high), probes in zip(task.buckets, task.test_sets):
        ids, labels = probes["input_ids"], probes["labels"]
        assert (ids[:, 0] == BOS).all()
        assert (labels[:, :-1] == IGNORE_INDEX).all() and (labels[:, -1] >= world.value0).all()
        family, name, attribute = ids[:, 1] - world.family0, ids[:, 2] - world.name0, ids[:, 3] - world.attribute0
        entity = family * world.names_per_topic + name
        assert torch.equal(labels[:, -1], torch.from_numpy(world.values[entity.numpy(), attribute.numpy()]))
        counts = task.fact_counts[(entity * world.num_attributes + attribute).numpy()]
        assert (counts >= low).all() and (counts < high).all()


def test_validation_and_test_probe_disjoint_facts(task):
    for test, validation in zip(task.test_sets, task.val_sets):
        as_rows = lambda s: {tuple(r) for r in s["input_ids"].tolist()}
        assert len(validation["labels"]) > 0
        assert not as_rows(test) & as_rows(validation)


def test_mention_frequency_is_long_tailed(task):
    seen = task.fact_counts[task.fact_counts > 0]
    assert seen.max() >= 10 * np.median(seen)


def test_training_sequences_come_from_one_leaf_and_carry_its_path(task):
    data = task.train_set
    ids, labels, paths = data["input_ids"], data["labels"], data["memory_path"]
    assert ids.shape[1] == 32 and paths.shape[1] == 2
    assert torch.equal(labels[:, :-1][labels[:, :-1] != IGNORE_INDEX], ids[:, 1:][labels[:, :-1] != IGNORE_INDEX])
    generic = (paths == -1).all(1)
    assert 0 < generic.float().mean() < 0.2, "about 1/17 of the sequences train the generic memory"
    # every family token in a sequence belongs to documents of that sequence's leaf: re-embed and check the leaf
    assert ((paths >= 0) & (paths < 2) | (paths == -1)).all()


def test_probe_paths_come_from_the_prompt_alone(task):
    probes = task.test_sets[0]
    expected = task.tree.lookup(task.embedder.embed(list(probes["input_ids"])))
    assert torch.equal(probes["memory_path"], expected)


def test_batches_reach_the_model_with_their_memory_path(task):
    batch = next(iter(task.train_dataloader()))
    assert set(batch) == {"input_ids", "labels", "memory_path"}
    batch = next(iter(task.test_dataloader()[0]))
    assert set(batch) == {"input_ids", "labels", "memory_path"}


def test_bad_settings_fail_in_one_line():
    with pytest.raises(ValueError, match="bucket_edges must be increasing"):
        build_task("facts", bucket_edges=[4, 2])
    with pytest.raises(ValueError, match="fewer than 2 facts occur 1000"):
        build_task("facts", num_topics=4, names_per_topic=8, num_attributes=4, num_documents=300, levels=1,
                   branching=2, bucket_edges=[1, 1000])


def test_the_minilm_embedder_without_its_extra_names_the_memory_embedder_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # as if not installed
    with pytest.raises(ValueError) as error:
        build_task("facts", num_documents=50, embedder="minilm")
    assert str(error.value) == ("task.embedder=minilm needs the sentence-transformers package: "
                                "pip install 'zoo[memory-embedder]' (or use task.embedder=tokens)")


def test_train_py_task_facts_with_the_memory_runs(tmp_path):
    """`python train.py task=facts model.mlp=hpm`, shrunk: trains, reports per bucket and the model's sizes."""
    from tests.test_train import config
    from zoo.train import build, train

    overrides = ["task=facts", "model.mlp={name:hpm,levels:2,branching:2,block_sizes:[4,4]}", "model.d_model=16",
                 "task.num_topics=4", "task.names_per_topic=8", "task.num_documents=300", "task.levels=2",
                 "task.branching=2", "task.bucket_edges=[1,3]", "task.probes_per_bucket=10",
                 "trainer.max_epochs=1", "+trainer.limit_train_batches=3"]
    result = train(config(overrides), tmp_path)
    assert [s["slice"] for s in result["slices"]] == ["freq1-2", "freq3+"]
    sizes = result["sizes"]
    assert sizes["anchor"] + sizes["bank"] == sizes["parameters"] and sizes["fetched"] > 0
    _, lit = build(config(overrides))
    assert lit.model.layers[0].mlp.block_sizes == (4, 4)
