"""mqar_forgetting and mqar_compositional: semantics, determinism, read-twice, bad settings, needs recall."""
import pytest
import torch

from tests.tasks.recall_checks import assert_deterministic_per_seed, assert_needs_recall, assert_read_twice_layout
from zoo.tasks import build_task
from zoo.tasks.mqar import IGNORE_INDEX
from zoo.tasks.mqar_variants import mqar_compositional, mqar_forgetting

FORGETTING = dict(vocab_size=48, train_slices=[[4, 2, 4000]], test_slices=[[4, 2, 300]], batch_size=32)
COMPOSITIONAL = dict(vocab_size=48, train_slices=[[2, 4000]], test_slices=[[2, 300]], batch_size=32)


def queried(inputs, labels, row):
    return [(inputs[row, p].item(), labels[row, p].item()) for p in (labels[row] != IGNORE_INDEX).nonzero().flatten()]


def test_forgetting_answers_are_the_latest_binding():
    inputs, labels = mqar_forgetting(64, 50, 6, 3, torch.Generator().manual_seed(0))
    context = 2 * (6 + 3)
    assert inputs.shape == (50, context + 12) and (labels[:, :context] == IGNORE_INDEX).all()
    for row in range(50):
        pairs = inputs[row, :context].view(-1, 2).tolist()
        first, latest = dict(pairs[:6]), dict(pairs)
        changed = [k for k in first if first[k] != latest[k]]
        assert len(first) == 6 and len(changed) == 3  # every update binds a new value
        assert dict(queried(inputs, labels, row)) == latest


def test_compositional_keys_form_a_grid_and_need_both_tokens():
    inputs, labels = mqar_compositional(60, 50, 3, torch.Generator().manual_seed(0))
    assert inputs.shape == (50, 54)
    for row in range(50):
        triples = inputs[row, :27].view(9, 3).tolist()
        firsts, seconds = {t[0] for t in triples}, {t[1] for t in triples}
        assert len(firsts) == len(seconds) == 3 and len({(t[0], t[1]) for t in triples}) == 9
        binding = {(t[0], t[1]): t[2] for t in triples}
        for query in inputs[row, 27:].view(9, 3).tolist():
            assert binding[(query[0], query[1])] == query[2]
        scored = (labels[row, 27:].view(9, 3) != IGNORE_INDEX)
        assert scored[:, 1].all() and not scored[:, 0].any() and not scored[:, 2].any()


@pytest.mark.parametrize("name, options", [("mqar_forgetting", FORGETTING), ("mqar_compositional", COMPOSITIONAL)])
def test_deterministic_per_seed_and_read_twice(name, options):
    assert_deterministic_per_seed(name, **options)
    assert_read_twice_layout(name, **options)


@pytest.mark.parametrize("name, options, message", [
    ("mqar_forgetting", dict(FORGETTING, test_slices=[[4, 5, 10]]), "num_updates=5 must not exceed num_kv_pairs=4"),
    ("mqar_forgetting", dict(FORGETTING, vocab_size=6), "vocab_size=6 is too small"),
    ("mqar_compositional", dict(COMPOSITIONAL, test_slices=[[17, 10]]), "grid_size=17"),
])
def test_bad_settings_fail_naming_the_value(name, options, message):
    with pytest.raises(ValueError, match=message):
        build_task(name, **options)


def test_attention_solves_forgetting_and_a_context_blind_model_is_at_chance():
    assert_needs_recall(build_task("mqar_forgetting", **FORGETTING), chance=1 / 24)


def test_attention_solves_compositional_and_a_context_blind_model_is_at_chance():
    assert_needs_recall(build_task("mqar_compositional", **COMPOSITIONAL), chance=1 / 16)
