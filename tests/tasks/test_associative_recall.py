"""noisy_recall and fuzzy_recall (MAD): layout, determinism, read-twice, bad settings, needs recall."""
import pytest
import torch

from tests.tasks.recall_checks import assert_deterministic_per_seed, assert_needs_recall, assert_read_twice_layout
from zoo.tasks import build_task
from zoo.tasks.associative_recall import fuzzy_recall, noisy_recall
from zoo.tasks.mqar import IGNORE_INDEX

NOISY = dict(vocab_size=48, noise_vocab_size=8, train_slices=[[24, 4, 4000]], test_slices=[[24, 4, 300]], batch_size=32)
FUZZY = dict(vocab_size=16, train_slices=[[4, 4000]], test_slices=[[4, 300]], batch_size=32)


def test_noisy_recall_answers_are_the_values_bound_in_the_noisy_context():
    inputs, labels = noisy_recall(64, 40, 48, 6, 16, torch.Generator().manual_seed(0))
    context = 48 - 12
    assert (labels[:, :context] == IGNORE_INDEX).all()
    half = (64 - 16) // 2
    for row in range(40):
        tokens = inputs[row, :context].tolist()
        noise = [t for t in tokens if t >= 2 * half]
        assert len(noise) == context - 12
        pairs = [t for t in tokens if t < 2 * half]
        binding = dict(zip(pairs[0::2], pairs[1::2]))
        assert len(binding) == 6 and all(k < half <= v for k, v in binding.items())
        queried = []
        for position in (labels[row] != IGNORE_INDEX).nonzero().flatten().tolist():
            assert binding[inputs[row, position].item()] == labels[row, position].item()
            queried.append(inputs[row, position].item())
        assert sorted(queried) == sorted(binding)


def test_fuzzy_recall_scores_every_value_token_of_multi_token_keys():
    inputs, labels = fuzzy_recall(32, 40, 5, 3, 2, torch.Generator().manual_seed(0))
    assert inputs.shape == (40, 2 * 5 * 5)
    for row in range(40):
        context = inputs[row, :25].view(5, 5)
        binding = {tuple(r[:3].tolist()): r[3:].tolist() for r in context}
        assert len(binding) == 5  # keys distinct as tuples
        queries = inputs[row, 25:].view(5, 5)
        scored = labels[row, 25:].view(5, 5)
        for query, score in zip(queries, scored):
            assert score[:2].tolist() == [IGNORE_INDEX] * 2 and score[4] == IGNORE_INDEX
            assert score[2:4].tolist() == binding[tuple(query[:3].tolist())] == query[3:].tolist()


@pytest.mark.parametrize("name, options", [("noisy_recall", NOISY), ("fuzzy_recall", FUZZY)])
def test_deterministic_per_seed_and_read_twice(name, options):
    assert_deterministic_per_seed(name, **{**options, "train_slices": options["train_slices"][:1]})
    assert_read_twice_layout(name, **options)


@pytest.mark.parametrize("name, options, message", [
    ("noisy_recall", dict(NOISY, test_slices=[[24, 7, 10]]), "4 \\* num_kv_pairs <= input_seq_len"),
    ("noisy_recall", dict(NOISY, noise_vocab_size=44), "distinct keys"),
    ("noisy_recall", dict(NOISY, noise_vocab_size=0), "noise_vocab_size must be a positive integer"),
    ("fuzzy_recall", dict(FUZZY, test_slices=[[100, 10]]), "fewer than num_kv_pairs=100"),
    ("fuzzy_recall", dict(FUZZY, key_len=0), "key_len must be a positive integer"),
    ("fuzzy_recall", dict(FUZZY, vocab_size=512, key_len=4), "at most"),
])
def test_bad_settings_fail_naming_the_value(name, options, message):
    with pytest.raises(ValueError, match=message):
        build_task(name, **options)


def test_attention_solves_noisy_recall_and_a_context_blind_model_is_at_chance():
    assert_needs_recall(build_task("noisy_recall", **NOISY), chance=1 / 20)


def test_attention_solves_fuzzy_recall_and_a_context_blind_model_is_at_chance():
    assert_needs_recall(build_task("fuzzy_recall", **FUZZY), chance=1 / 8)
