"""Shared checks for the recall-suite tasks: a tiny attention LM trained by hand (fast on one CPU core), the
best context-blind predictor, determinism per seed, and the read-twice layout."""
from collections import Counter, defaultdict

import torch
import torch.nn.functional as F

from zoo.model import LM
from zoo.tasks import build_task
from zoo.tasks.data import IGNORE_INDEX


def scored_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    mask = labels != IGNORE_INDEX
    return (logits.argmax(-1)[mask] == labels[mask]).float().mean().item()


def train_tiny_lm(task, layers, steps: int, lr: float = 3e-3, d_model: int = 64, n_layers: int = 2,
                  batch_size: int = 32, seed: int = 0) -> list[float]:
    """Fit a small LM on the task's train split with AdamW (plain loop, no Lightning); test accuracy per slice."""
    torch.manual_seed(seed)
    task.setup("fit")
    model = LM(vocab_size=task.vocab_size, d_model=d_model, n_layers=n_layers, layers=layers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    data = task.train_set
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        part = torch.randint(len(data.parts), (1,), generator=generator).item()
        inputs, labels = data.parts[part]
        rows = torch.randint(len(inputs), (batch_size,), generator=generator)
        loss = F.cross_entropy(model(inputs[rows]).flatten(0, 1), labels[rows].flatten(), ignore_index=IGNORE_INDEX)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    with torch.no_grad():
        return [scored_accuracy(model(d.parts[0][0]), d.parts[0][1]) for d in task.eval_sets["test"]]


def context_blind_accuracy(task) -> list[float]:
    """Per test slice, the accuracy of the best predictor that sees only the current token and its position.

    Fitted on the train split (majority label per (token, position), else the most common label): it bounds
    what any model that cannot read the context can do, however long it trains.
    """
    task.setup("fit")
    table, overall = defaultdict(Counter), Counter()
    for inputs, labels in task.train_set.parts:
        rows, cols = (labels != IGNORE_INDEX).nonzero(as_tuple=True)
        for token, position, label in zip(inputs[rows, cols].tolist(), cols.tolist(), labels[rows, cols].tolist()):
            table[(token, position)][label] += 1
            overall[label] += 1
    fallback = overall.most_common(1)[0][0]
    accuracies = []
    for data in task.eval_sets["test"]:
        inputs, labels = data.parts[0]
        rows, cols = (labels != IGNORE_INDEX).nonzero(as_tuple=True)
        hits = [(table[(t, p)].most_common(1)[0][0] if table[(t, p)] else fallback) == y
                for t, p, y in zip(inputs[rows, cols].tolist(), cols.tolist(), labels[rows, cols].tolist())]
        accuracies.append(sum(hits) / len(hits))
    return accuracies


def assert_deterministic_per_seed(name: str, **options):
    """Same seed, same draws (every split); another seed, other draws; validation and test differ."""
    first, again, other = (build_task(name, **{**options, "seed": s}) for s in (1, 1, 2))
    for task in (first, again, other):
        task.setup("fit")
    for split_a, split_b in ((first.train_set.parts, again.train_set.parts),
                             ([d.parts[0] for d in first.eval_sets["test"]], [d.parts[0] for d in again.eval_sets["test"]])):
        for (x, y), (x2, y2) in zip(split_a, split_b):
            assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(first.train_set.parts[0][0], other.train_set.parts[0][0])
    validation, test = first.eval_sets["validation"][0].parts[0][0], first.eval_sets["test"][0].parts[0][0]
    assert validation.shape == test.shape and not torch.equal(validation, test)


def assert_read_twice_layout(name: str, **options):
    """train_and_test (and its alias true) repeats exactly the context (the unscored prefix) before the rest of
    every split, answers unchanged; test_only does so on validation and test while train stays read once."""
    once = build_task(name, **{**options, "read_twice": "off"})
    twice = build_task(name, **{**options, "read_twice": "train_and_test"})
    for split in ("train", "validation", "test"):
        for spec, (_, x, y), (_, x2, y2) in zip(once.train_slices if split == "train" else once.test_slices,
                                                once.generate(split), twice.generate(split)):
            length, context = once.lengths(spec)
            assert x.shape[1] == length and x2.shape[1] == length + context
            assert torch.equal(x2[:, :context], x[:, :context]) and torch.equal(x2[:, context:], x)
            assert (y2[:, :context] == IGNORE_INDEX).all() and torch.equal(y2[:, context:], y)
            assert (y[:, :context] == IGNORE_INDEX).all()
    assert [s["input_seq_len"] for s in twice.describe_slices()] == [
        sum(once.lengths(s)) for s in once.test_slices]
    alias = build_task(name, **{**options, "read_twice": True})  # the old bool: the same data as train_and_test
    assert alias.read_twice == "train_and_test" and all(
        torch.equal(a[1], b[1]) and torch.equal(a[2], b[2]) for a, b in zip(alias.generate("test"), twice.generate("test")))
    assert build_task(name, **{**options, "read_twice": False}).read_twice == "off"
    test_only = build_task(name, **{**options, "read_twice": "test_only"})
    for split, reference in (("train", once), ("validation", twice), ("test", twice)):
        for (_, x, y), (_, x2, y2) in zip(test_only.generate(split), reference.generate(split)):
            assert torch.equal(x, x2) and torch.equal(y, y2), f"test_only: {split} as {reference.read_twice}"
    assert test_only.describe_slices() == [{**row, "read_twice": "test_only"} for row in twice.describe_slices()]


def assert_needs_recall(task, chance: float, layers=({"name": "short_conv"}, {"name": "attention"}), steps: int = 600,
                        solved: float = 0.9, **fit):
    """A tiny attention LM solves the instance, while the best context-blind predictor stays near chance."""
    blind = context_blind_accuracy(task)
    assert max(blind) <= 1.5 * chance + 0.02, f"context-blind accuracy {blind} vs chance {chance:.3f}"
    accuracy = train_tiny_lm(task, list(layers), steps=steps, **fit)
    assert min(accuracy) >= solved, f"attention reached only {accuracy}"
    return accuracy, blind


def check_structure(inputs, labels, vocab, pairs):
    key_lo, value_lo = 1, vocab // 2
    for row_in, row_lab in zip(inputs.tolist(), labels.tolist()):
        keys, values = row_in[0: 2 * pairs: 2], row_in[1: 2 * pairs: 2]
        assert all(key_lo <= k < value_lo for k in keys), "keys come from [1, V/2)"
        assert all(value_lo <= v < vocab for v in values), "values come from [V/2, V)"
        assert len(set(keys)) == pairs, "keys are distinct within an example"
        bound = dict(zip(keys, values))
        scored = [t for t, label in enumerate(row_lab) if label != IGNORE_INDEX]
        assert len(scored) == pairs, "one label per key"
        assert all(t >= 2 * pairs for t in scored), "no label inside the key-value context"
        assert all((t - 2 * pairs) % 2 == 0 for t in scored), "queries sit on even offsets after the context"
        queried = [row_in[t] for t in scored]
        assert sorted(queried) == sorted(keys), "every key is queried exactly once"
        assert all(row_lab[t] == bound[row_in[t]] for t in scored), "the label is the value bound to the queried key"
