"""The text task: corpora, held-out splits made before packing, packing, tokenisers, errors, and bits per byte
end to end through train()."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from tests.helpers import write_documents
from zoo.tasks import build_task
from zoo.tasks.text import (MIN_DOCUMENTS_FOR_DOCUMENT_SPLIT, default_cache_dir, default_corpus, pack,
                            split_documents, tokenizer_from_task_config)
from zoo.tasks.tokenizers import ByteTokenizer

ROOT = Path(__file__).resolve().parents[2]
TRICKY = "Ünïcödé — “quotes”, tabs\tand  double  spaces,\r\nCRLF, emoji 🦀, 中文, trailing space \n\n"


def rows_text(dataset, tokenizer) -> str:
    """Every token a split's rows contain (inputs and the last label of each row), decoded."""
    inputs, labels = dataset.parts[0]
    tokens = torch.cat([inputs, labels[:, -1:]], dim=1).flatten().tolist()
    return tokenizer.decode(tokens)


def markers(text: str) -> set[str]:
    return {word for word in text.split() if word.startswith("doc") and len(word) == 7}


# ------------------------------------------------------------------------------------------ held-out text
@pytest.mark.parametrize("boundaries", [False, True], ids=["joined", "document_boundaries"])
@pytest.mark.parametrize("tokenizer", ["byte", "bpe"])
def test_a_folder_is_split_by_document_and_no_held_out_document_reaches_training(tmp_path, tokenizer, boundaries):
    if tokenizer == "bpe":
        pytest.importorskip("tokenizers")
    documents = write_documents(tmp_path / "corpus", 40)
    module = build_task("text", path=str(tmp_path / "corpus"), tokenizer=tokenizer, bpe_vocab_size=300,
                        seq_len=32, batch_size=4, val_fraction=0.1, test_fraction=0.1,
                        document_boundaries=boundaries)
    module.setup("fit")
    splits = module.split_texts
    assert sorted(sum(splits.values(), [])) == sorted(documents)        # every document in exactly one split
    assert splits["val"] and splits["test"] and set(splits["val"]).isdisjoint(splits["test"])
    train_seen = markers(rows_text(module.sets["train"], module.tokenizer))
    for split in ("val", "test"):
        held_out = set().union(*(markers(d) for d in splits[split]))
        assert held_out and held_out.isdisjoint(train_seen), split
        # and the held-out rows hold held-out text only
        assert markers(rows_text(module.sets[split], module.tokenizer)) <= held_out


def test_a_single_file_is_split_by_byte_range_at_line_breaks(tmp_path):
    lines = [f"line{i:05d} some text here\n" for i in range(3000)]
    (tmp_path / "book.txt").write_text("".join(lines))
    module = build_task("text", path=str(tmp_path / "book.txt"), seq_len=64, val_fraction=0.1, test_fraction=0.05)
    module.setup("fit")
    parts = {s: module.split_texts[s][0] for s in ("train", "val", "test")}
    assert parts["train"] + parts["val"] + parts["test"] == "".join(lines)   # contiguous, nothing lost
    assert all(p.endswith("\n") for p in (parts["train"], parts["val"]))     # cut at line breaks
    assert len(parts["val"]) == pytest.approx(0.1 * len("".join(lines)), rel=0.05)
    train_lines = set(rows_text(module.sets["train"], module.tokenizer).split("\n"))
    held_out_lines = set(parts["val"].splitlines()) | set(parts["test"].splitlines())
    assert not train_lines & held_out_lines


def test_duplicate_documents_are_kept_once_so_they_cannot_straddle_the_split():
    documents = [f"document {i % 25}\n" * 20 for i in range(100)]         # every text four times
    splits = split_documents(documents, 0.2, 0.2, seed=0)
    assert sorted(sum(splits.values(), [])) == sorted(set(documents))


def test_split_documents_falls_back_to_byte_range_below_the_document_threshold():
    few = [f"document {i}\n" * 50 for i in range(MIN_DOCUMENTS_FOR_DOCUMENT_SPLIT - 1)]
    splits = split_documents(few, 0.1, 0.1, seed=0)
    assert all(len(splits[s]) == 1 for s in splits)
    assert "".join(splits[s][0] for s in ("train", "val", "test")) == "\n".join(few)


def test_the_default_corpus_is_the_standard_library_help_topics():
    corpus = default_corpus()
    from pydoc_data.topics import topics
    assert sorted(corpus.documents) == sorted(topics.values())   # it holds some documents twice:
    assert len(set(corpus.documents)) < len(corpus.documents)    # a split must not put one copy on each side
    module = build_task("text")
    module.setup()
    assert module.vocab_size == 257
    assert set(module.split_texts["train"]).isdisjoint(module.split_texts["val"] + module.split_texts["test"])
    assert module.monitor == ("val/bpb", "min")
    assert module.describe_slices()[0]["slice"] == "text" and module.slice_keys == ["text"]


# ---------------------------------------------------------------------------------------------- packing
def test_rows_are_consecutive_windows_shifted_by_one():
    stream = np.arange(1000)
    inputs, labels = pack(stream, seq_len=64)
    assert inputs.shape == labels.shape == (999 // 64, 64)
    assert torch.equal(labels[:, :-1], inputs[:, 1:])
    assert torch.equal(inputs.flatten(), torch.arange(inputs.numel()))   # every token predicted once, in order
    assert torch.equal(labels[:, -1], inputs[:, -1] + 1)


def test_documents_are_joined_by_end_of_text(tmp_path):
    write_documents(tmp_path / "c", 25)
    module = build_task("text", path=str(tmp_path / "c"), seq_len=16)
    module.setup()
    inputs, _ = module.sets["train"].parts[0]
    eos = (inputs == 256).sum().item()
    assert 0 < eos <= len(module.split_texts["train"])


@pytest.mark.parametrize("tokenizer", ["byte", "bpe"])
def test_with_document_boundaries_each_row_says_which_document_every_position_reads(tmp_path, tokenizer):
    if tokenizer == "bpe":
        pytest.importorskip("tokenizers")
    write_documents(tmp_path / "c", 25)
    module = build_task("text", path=str(tmp_path / "c"), tokenizer=tokenizer, bpe_vocab_size=300, seq_len=48,
                        document_boundaries=True)
    module.setup()
    eos = module.tokenizer.eos_id
    for split, dataset in module.sets.items():
        inputs, labels = dataset.parts[0]
        seq_idx = dataset.extras[0]["seq_idx"]
        assert seq_idx.shape == inputs.shape and (seq_idx[:, 0] == 0).all()
        # a new document starts exactly at an end-of-text input (it opens the document after it)
        starts = seq_idx[:, 1:] != seq_idx[:, :-1]
        assert torch.equal(starts, inputs[:, 1:] == eos), split
        assert ((seq_idx[:, 1:] - seq_idx[:, :-1]) <= 1).all()
        # no label predicts across a boundary: a document's last position predicts end of text
        assert (labels[:, :-1][starts] == eos).all()
        # each document segment decodes to text of one document only
        for row_inputs, row_idx in zip(inputs[:20], seq_idx[:20]):
            for d in row_idx.unique():
                tokens = [t for t in row_inputs[row_idx == d].tolist() if t != eos]
                assert len(markers(module.tokenizer.decode(tokens))) <= 1
    # the same rows as without boundaries, behind one leading end of text: every token still predicted once
    plain = build_task("text", path=str(tmp_path / "c"), tokenizer=tokenizer, bpe_vocab_size=300, seq_len=48)
    plain.setup()
    with_boundaries, joined = module.sets["train"].parts[0][0].flatten(), plain.sets["train"].parts[0][0].flatten()
    assert with_boundaries[0] == eos and torch.equal(with_boundaries[1:101], joined[:100])
    batch = next(iter(module.train_dataloader()))
    assert set(batch) == {"input_ids", "labels", "seq_idx"} and batch["seq_idx"].shape == batch["input_ids"].shape


def test_document_boundaries_must_be_a_bool(tmp_path):
    write_documents(tmp_path / "c", 25)
    with pytest.raises(ValueError, match="document_boundaries must be true or false, got 'yes'"):
        build_task("text", path=str(tmp_path / "c"), document_boundaries="yes")


# ----------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("make,expected", [
    (lambda p: None, "does not exist"),
    (lambda p: p.write_text(""), "is empty"),
    (lambda p: p.write_bytes(b"PK\x03\x04\x00\x00binary"), "binary"),
    (lambda p: p.write_bytes(b"caf\xe9 latin-1"), "not UTF-8"),
])
def test_bad_files_fail_with_one_line_naming_the_path(tmp_path, make, expected):
    path = tmp_path / "corpus.txt"
    make(path)
    with pytest.raises(ValueError) as error:
        build_task("text", path=str(path))
    message = str(error.value)
    assert str(path) in message and expected in message and "\n" not in message


def test_an_empty_folder_and_a_tiny_held_out_split_fail_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no files"):
        build_task("text", path=str(tmp_path / "empty"))
    (tmp_path / "tiny.txt").write_text("short\n" * 30)
    with pytest.raises(ValueError, match="fewer than seq_len"):
        build_task("text", path=str(tmp_path / "tiny.txt"), seq_len=128).setup()
    with pytest.raises(ValueError, match="tokenizer='words' is not one of"):
        build_task("text", path=str(tmp_path / "tiny.txt"), tokenizer="words")


# -------------------------------------------------------------------------------------------- tokenisers
def test_byte_tokenizer_round_trips_and_counts_one_byte_per_token():
    tokenizer = ByteTokenizer()
    ids = tokenizer.encode(TRICKY)
    assert tokenizer.decode(ids) == TRICKY
    assert tokenizer.byte_lengths()[ids].sum() == len(TRICKY.encode())


def test_bpe_trains_caches_reloads_and_round_trips_exactly(tmp_path):
    pytest.importorskip("tokenizers")
    write_documents(tmp_path / "corpus", 30)
    (tmp_path / "corpus" / "tricky.txt").write_text(TRICKY * 20, encoding="utf-8")
    options = dict(path=str(tmp_path / "corpus"), tokenizer="bpe", bpe_vocab_size=400, seq_len=32)
    first = build_task("text", **options)
    assert first.vocab_size == 400 and first.tokenizer.eos_id is not None
    cached = [Path(first.tokenizer.file)]
    assert cached[0].parent == default_cache_dir() and cached[0].name.startswith("corpus.bpe400-")  # user cache
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"], "nothing written beside the user's data"
    stamp = cached[0].stat().st_mtime_ns
    second = build_task("text", **options)                               # reloaded, not retrained
    assert second.tokenizer.file == first.tokenizer.file and cached[0].stat().st_mtime_ns == stamp
    for text in (TRICKY, "doc0001 line 3: the quick brown fox", "", " leading space", "x" * 1000):
        ids = second.tokenizer.encode(text)
        assert second.tokenizer.decode(ids) == text
        assert second.tokenizer.byte_lengths()[ids].sum() == len(text.encode())   # bits per byte stays exact
    assert len(second.tokenizer.encode(TRICKY * 5)) < len(TRICKY.encode() * 5)   # it does compress
    second.setup()
    assert second.bytes_per_token["val"] > 1.5
    # what zoo.sample does: the tokenizer comes back from the task config alone
    rebuilt = tokenizer_from_task_config({"name": "text", **options})
    assert rebuilt.file == first.tokenizer.file


def test_bpe_cache_is_not_reused_for_a_changed_corpus(tmp_path):
    pytest.importorskip("tokenizers")
    (tmp_path / "a.txt").write_text("hello world, hello text.\n" * 400)
    first = build_task("text", path=str(tmp_path / "a.txt"), tokenizer="bpe", bpe_vocab_size=300, seq_len=16)
    (tmp_path / "a.txt").write_text("entirely different words now.\n" * 500)
    with pytest.raises(ValueError, match="is not there"):
        tokenizer_from_task_config({"path": str(tmp_path / "a.txt"), "tokenizer": "bpe", "bpe_vocab_size": 300})
    second = build_task("text", path=str(tmp_path / "a.txt"), tokenizer="bpe", bpe_vocab_size=300, seq_len=16)
    assert second.tokenizer.file != first.tokenizer.file


# ------------------------------------------------------------------------------------ Hugging Face datasets
def test_a_hugging_face_dataset_loads_by_name_offline(tmp_path, monkeypatch):
    """A dataset folder built here (JSON lines), loaded by name through datasets.load_dataset with the hub off."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    documents = write_documents(tmp_path / "unused", 30)
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    datasets.Dataset.from_dict({"story": documents, "id": list(range(30))}).to_json(folder / "train.jsonl")
    module = build_task("text", dataset=str(folder), text_field="story", max_documents=25, seq_len=32)
    module.setup()
    assert sorted(sum(module.split_texts.values(), [])) == sorted(documents[:25])
    with pytest.raises(ValueError, match="has no column 'text'"):
        build_task("text", dataset=str(folder))


def test_without_datasets_a_dataset_name_fails_with_the_install_hint(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(ValueError, match=r"needs the optional package `datasets`"):
        build_task("text", dataset="roneneldan/TinyStories")


# ---------------------------------------------------------------------------------- bits per byte, end to end
def test_training_logs_loss_perplexity_and_bits_per_byte(tmp_path):
    from zoo.train import train

    write_documents(tmp_path / "corpus", 30)
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[
            "task=text", f"task.path={tmp_path / 'corpus'}", "task.seq_len=32", "task.batch_size=16",
            "model.d_model=32", "trainer.max_epochs=2", "+trainer.limit_train_batches=20",
            "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false", "print_test_table=false"])
    result = train(cfg, tmp_path / "run")
    row = json.loads((tmp_path / "run" / "test_accuracy.json").read_text())["slices"][0]
    assert row["slice"] == "text" and row["tokenizer"] == "byte"
    assert row["perplexity"] == pytest.approx(math.exp(row["loss"]))
    assert row["bits_per_byte"] == pytest.approx(row["loss"] / math.log(2))   # bytes: one byte per token
    assert row["bits_per_byte"] < math.log2(257)                              # it learned something
    assert result["slices"][0]["bits_per_byte"] == row["bits_per_byte"]
    with open(next((tmp_path / "run" / "logs").rglob("metrics.csv"))) as file:
        logged = list(csv.DictReader(file))
    val_bpb = [float(r["val/bpb"]) for r in logged if r.get("val/bpb")]
    assert len(val_bpb) == 2 and val_bpb[1] < val_bpb[0]                      # one per epoch, falling
    assert any(r.get("test/bpb") for r in logged) and any(r.get("train/tok_s") for r in logged)


def test_training_with_document_boundaries_runs_end_to_end(tmp_path, monkeypatch):
    from zoo.model import LM
    from zoo.train import train

    packed_calls = []
    forward = LM.forward

    def spy(self, input_ids, *args, **kwargs):  # the batches' seq_idx must reach the model
        packed_calls.append(kwargs.get("seq_idx") is not None)
        return forward(self, input_ids, *args, **kwargs)
    monkeypatch.setattr(LM, "forward", spy)

    write_documents(tmp_path / "corpus", 30)
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[
            "task=text", f"task.path={tmp_path / 'corpus'}", "task.seq_len=32", "task.batch_size=8",
            "task.document_boundaries=true", "model=conv_mamba", "model.d_model=16", "trainer.max_epochs=1",
            "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=2",
            "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false", "print_test_table=false"])
    train(cfg, tmp_path / "run")
    row = json.loads((tmp_path / "run" / "test_accuracy.json").read_text())["slices"][0]
    assert math.isfinite(row["bits_per_byte"])
    assert packed_calls and all(packed_calls)
