"""Language modelling on text: a corpus (a local file or folder, a Hugging Face dataset, or the default corpus
shipped with Python), split into train / validation / test text, tokenised (bytes or BPE) and packed into
fixed-length rows.

The split is made on the text, before tokenising and packing: by whole documents when the corpus has enough
of them, else by byte range (the held-out text is the end of the corpus, cut at a line break). No held-out
byte can therefore reach a training row. Documents are joined by the end-of-text token; rows are windows of
``seq_len + 1`` tokens taken every ``seq_len`` tokens, so every token of a split is predicted exactly once.

``document_boundaries=True`` (off by default: unchanged rows and results for existing runs) keeps the same rows
but makes each document a sequence of its own: the split's stream opens with an end-of-text token too, each
end-of-text opens the document after it, and every row carries ``seq_idx``, the document index of each input
position, which the model hands to every mixer (no attention, state or conv tap crosses a document). No label
then predicts across a boundary, and none is masked: a document's last token predicts end-of-text from that
document, and the end-of-text input predicts the next document's first token from nothing before it, as a
model run on that document alone would. A document cut by a row's edge continues in the next row (as without
boundaries). Rows are built per split, after the split, so held-out text still never reaches training. A
corpus split by byte range is one document per split, so there boundaries change nothing.
"""
import hashlib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from zoo.checks import require_choice, require_package, require_positive_int
from zoo.tasks.data import ResumableTrainOrder, SegmentBatchSampler, SegmentedDataset, collate_batch
from zoo.tasks.tokenizers import BPETokenizer, ByteTokenizer, bpe_cache_file, train_bpe

TOKENIZERS = ("byte", "bpe")
DEFAULT_CORPUS = "pydoc_data.topics"
# below this many documents a document split would leave too few in the held-out sets: split by byte range
MIN_DOCUMENTS_FOR_DOCUMENT_SPLIT = 20


@dataclass
class Corpus:
    """A named source of documents. ``identity`` changes whenever the text may have changed (it names the
    cached BPE); ``cache_dir`` is where that BPE is kept unless the task sets ``cache_dir``."""
    name: str
    identity: dict
    cache_dir: Path
    documents: list[str] = field(repr=False)


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/zoo/text, else ~/.cache/zoo/text: where BPE tokenisers are kept unless task.cache_dir."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "zoo" / "text"


# ----------------------------------------------------------------------------------------------- corpora
def read_text_file(path: Path) -> str:
    """The file's text; ValueError naming the path when it is not UTF-8 text."""
    data = path.read_bytes()
    if b"\x00" in data:
        raise ValueError(f"text corpus file {path} is binary (it contains NUL bytes); give UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"text corpus file {path} is not UTF-8 text (byte {error.start} cannot be decoded)") from None


def corpus_files(folder: Path) -> list[Path]:
    """Every non-hidden file under folder, in a fixed order."""
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(root) / n for n in sorted(names) if not n.startswith(".")]
    return files


def local_corpus(path: str) -> Corpus:
    """A file is one document; a folder's files are its documents. Its BPE is cached in the user cache folder
    (nothing is written beside the user's data), named by the path, size and modification time."""
    root = Path(path).expanduser().resolve()
    if not root.exists():
        raise ValueError(f"text corpus path {path} does not exist; give a UTF-8 text file or a folder of them")
    files = corpus_files(root) if root.is_dir() else [root]
    if not files:
        raise ValueError(f"text corpus folder {path} holds no files")
    documents = [read_text_file(f) for f in files]
    if not any(documents):
        raise ValueError(f"text corpus {path} is empty")
    stats = [f.stat() for f in files]
    identity = {"path": str(root), "files": len(files), "bytes": sum(s.st_size for s in stats),
                "mtime_ns": max(s.st_mtime_ns for s in stats)}
    return Corpus(name=root.name, identity=identity, cache_dir=default_cache_dir(), documents=documents)


def default_corpus() -> Corpus:
    """The standard library's help topics: ~470 KB of English prose about Python in ~80 documents, present
    wherever Python is (it backs ``help('topic')``), so the text task runs with no download."""
    from pydoc_data.topics import topics

    documents = [topics[key] for key in sorted(topics)]
    digest = hashlib.sha256("\x00".join(documents).encode()).hexdigest()[:16]
    return Corpus(name=DEFAULT_CORPUS, identity={"corpus": DEFAULT_CORPUS, "sha256": digest},
                  cache_dir=default_cache_dir(), documents=documents)


def dataset_corpus(name: str, config: str | None, split: str, text_field: str, max_documents: int | None) -> Corpus:
    """A Hugging Face dataset's text column (``datasets`` is optional: pip install 'zoo[text]')."""
    try:
        import datasets
    except ImportError:
        raise ValueError(f"task.dataset={name!r} needs the optional package `datasets`: "
                         "pip install 'zoo[text]' (or give task.path=FILE_OR_FOLDER)") from None
    try:
        data = datasets.load_dataset(name, config, split=split)
    except Exception as error:  # hub unreachable, unknown name or split: one line naming the dataset
        raise ValueError(f"could not load dataset {name!r} (config {config!r}, split {split!r}): "
                         f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    if text_field not in data.column_names:
        raise ValueError(f"dataset {name!r} has no column {text_field!r}; its columns: {', '.join(data.column_names)}")
    if max_documents is not None:
        data = data.select(range(min(max_documents, len(data))))
    documents = [text for text in data[text_field] if text]
    if not documents:
        raise ValueError(f"dataset {name!r} (split {split!r}) has no text in column {text_field!r}")
    identity = {"dataset": name, "config": config, "split": split, "text_field": text_field,
                "max_documents": max_documents, "fingerprint": getattr(data, "_fingerprint", None)}
    return Corpus(name=name.replace("/", "_"), identity=identity, cache_dir=default_cache_dir(), documents=documents)


def load_corpus(path: str | None = None, dataset: str | None = None, dataset_config: str | None = None,
                dataset_split: str = "train", text_field: str = "text", max_documents: int | None = None) -> Corpus:
    if path is not None and dataset is not None:
        raise ValueError("give task.path or task.dataset, not both")
    if path is not None:
        return local_corpus(path)
    if dataset is not None:
        return dataset_corpus(dataset, dataset_config, dataset_split, text_field, max_documents)
    return default_corpus()


# ------------------------------------------------------------------------------------------------ splits
def _cut_at_line(text: str, position: int) -> int:
    """The first line start at or after position (position itself when no line break follows)."""
    newline = text.find("\n", position)
    return position if newline < 0 else newline + 1


def split_documents(documents: list[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[str]]:
    """{"train", "val", "test"} -> documents. Whole documents, drawn at random, fill the held-out splits up to
    their fraction of the bytes; with fewer than MIN_DOCUMENTS_FOR_DOCUMENT_SPLIT documents the corpus is cut
    by byte range instead (train first, then validation, then test, each cut at a line break). Exact
    duplicate documents are kept once, so the same text can never sit on both sides of the split."""
    documents = list(dict.fromkeys(documents))
    sizes = [len(d.encode("utf-8")) for d in documents]
    total = sum(sizes)
    if len(documents) >= MIN_DOCUMENTS_FOR_DOCUMENT_SPLIT:
        order = list(range(len(documents)))
        random.Random(seed).shuffle(order)
        splits = {"test": [], "val": [], "train": []}
        targets = {"test": test_fraction * total, "val": val_fraction * total, "train": float("inf")}
        filled = dict.fromkeys(splits, 0)
        for index in order:
            name = next(s for s in ("test", "val", "train") if filled[s] < targets[s])
            splits[name].append(documents[index])
            filled[name] += sizes[index]
        if splits["train"]:
            return splits
    text = "\n".join(documents)
    held_out = int(len(text) * (1 - val_fraction - test_fraction))
    val_start = _cut_at_line(text, held_out)
    test_start = _cut_at_line(text, max(val_start, int(len(text) * (1 - test_fraction))))
    return {"train": [text[:val_start]], "val": [text[val_start:test_start]], "test": [text[test_start:]]}


# ------------------------------------------------------------------------------------------- tokenisers
def resolve_tokenizer(corpus: Corpus, tokenizer: str, bpe_vocab_size: int, cache_dir: str | None,
                      tokenizer_file: str | None, training_texts: list[str] | None = None):
    """The task's tokeniser. BPE: load ``tokenizer_file`` if given, else the cached file for this corpus and
    vocabulary size, training it on ``training_texts`` (the train split) when the cache is missing and
    texts are given."""
    require_choice("tokenizer", tokenizer, TOKENIZERS, "text task")
    if tokenizer == "byte":
        return ByteTokenizer()
    require_package("tokenizers", "tokenizers", "task.tokenizer=bpe", "text", instead="task.tokenizer=byte")
    if tokenizer_file is not None:
        if not Path(tokenizer_file).is_file():
            raise ValueError(f"tokenizer_file {tokenizer_file} does not exist")
        return BPETokenizer(tokenizer_file)
    require_positive_int("bpe_vocab_size", bpe_vocab_size, "text task")
    if bpe_vocab_size <= 257:
        raise ValueError(f"text task: bpe_vocab_size must exceed 257 (256 bytes + end of text), got {bpe_vocab_size}")
    file = bpe_cache_file(Path(cache_dir).expanduser() if cache_dir else corpus.cache_dir, corpus.name,
                          corpus.identity, bpe_vocab_size)
    if file.is_file():
        return BPETokenizer(file)
    if training_texts is None:
        raise ValueError(f"BPE tokenizer {file} is not there (the corpus changed since training, or the cache "
                         "was removed); give task.tokenizer_file=PATH")
    return train_bpe(training_texts, bpe_vocab_size, file)


def tokenize_documents(tokenizer, documents: list[str]) -> np.ndarray:
    """One token stream: each document's tokens followed by end of text."""
    parts = []
    for document in documents:
        parts.append(tokenizer.encode(document))
        parts.append(np.array([tokenizer.eos_id], dtype=np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def document_stream(tokenizer, documents: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, document index per token): end of text first and after each document; each end of text opens
    the document after it (the final one opens an empty document: it only ever appears as a label)."""
    eos = np.array([tokenizer.eos_id], dtype=np.int64)
    parts = [eos] + [np.concatenate([tokenizer.encode(d), eos]) for d in documents]
    # counted from the lengths, not by finding end of text (a document's own text might encode to it)
    lengths = [len(p) for p in parts[1:]]  # a document: the end of text opening it + its tokens
    document = np.repeat(np.arange(len(lengths) + 1), lengths + [1])
    return np.concatenate(parts), document


def pack(stream: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of (inputs, labels): windows of seq_len + 1 tokens every seq_len tokens; the tail is dropped."""
    rows = (len(stream) - 1) // seq_len
    windows = np.lib.stride_tricks.sliding_window_view(stream, seq_len + 1)[::seq_len][:rows]
    windows = torch.from_numpy(np.array(windows))  # a copy: the strided view is read-only
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


# ----------------------------------------------------------------------------------------------- module
class TextDataModule(ResumableTrainOrder, L.LightningDataModule):
    """Next-token prediction on a text corpus; one evaluation slice, "text", at length seq_len. val_dataloader
    is the validation split (it picks checkpoints), test_dataloader the test split (reported once)."""

    monitor = ("val/bpb", "min")

    def __init__(self, path: str | None = None, dataset: str | None = None, dataset_config: str | None = None,
                 dataset_split: str = "train", text_field: str = "text", max_documents: int | None = None,
                 tokenizer: str = "byte", bpe_vocab_size: int = 2048, tokenizer_file: str | None = None,
                 cache_dir: str | None = None, seq_len: int = 128, batch_size: int = 32,
                 val_fraction: float = 0.05, test_fraction: float = 0.05, seed: int = 0, num_workers: int = 0,
                 document_boundaries: bool = False, name: str = "text"):
        super().__init__()
        require_positive_int("seq_len", seq_len, "text task")
        require_positive_int("batch_size", batch_size, "text task")
        for label, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0 < fraction < 0.5:
                raise ValueError(f"text task: {label} must be in (0, 0.5), got {fraction}")
        if not isinstance(document_boundaries, bool):
            raise ValueError(f"text task: document_boundaries must be true or false, got {document_boundaries!r}")
        self.seq_len, self.batch_size, self.seed, self.num_workers = seq_len, batch_size, seed, num_workers
        self.document_boundaries = document_boundaries
        self.corpus = load_corpus(path, dataset, dataset_config, dataset_split, text_field, max_documents)
        self.split_texts = split_documents(self.corpus.documents, val_fraction, test_fraction, seed)
        self.tokenizer = resolve_tokenizer(self.corpus, tokenizer, bpe_vocab_size, cache_dir, tokenizer_file,
                                           training_texts=self.split_texts["train"])
        self.vocab_size = self.tokenizer.vocab_size
        self.sets: dict[str, SegmentedDataset] = {}
        self.bytes_per_token: dict[str, float] = {}  # read by LitLM to turn loss into bits per byte

    @property
    def slice_keys(self) -> list[str]:
        return ["text"]

    def describe_slices(self) -> list[dict]:
        return [{"slice": "text", "input_seq_len": self.seq_len, "tokenizer": self.tokenizer.kind,
                 "vocab_size": self.vocab_size}]

    def setup(self, stage: str | None = None):
        if self.sets:
            return
        byte_lengths = torch.from_numpy(self.tokenizer.byte_lengths())
        for split, documents in self.split_texts.items():
            if self.document_boundaries:
                stream, document = document_stream(self.tokenizer, documents)
            else:
                stream = tokenize_documents(self.tokenizer, documents)
            if len(stream) < self.seq_len + 1:
                raise ValueError(f"text task: the {split} split of {self.corpus.name.lstrip('.')} has "
                                 f"{len(stream)} tokens, fewer than seq_len + 1 = {self.seq_len + 1}; "
                                 "lower task.seq_len or give a larger corpus")
            inputs, labels = pack(stream, self.seq_len)
            if self.document_boundaries:
                seq_idx, _ = pack(document, self.seq_len)
                self.sets[split] = SegmentedDataset([(inputs, labels, {"seq_idx": seq_idx - seq_idx[:, :1]})])
            else:
                self.sets[split] = SegmentedDataset([(inputs, labels)])
            self.bytes_per_token[split] = float(byte_lengths[labels].sum()) / labels.numel()

    def num_tokens(self, split: str) -> int:
        return len(self.sets[split]) * self.seq_len

    def _loader(self, split: str, sampler):
        return DataLoader(self.sets[split], batch_sampler=sampler, collate_fn=collate_batch,
                          num_workers=self.num_workers)

    def train_dataloader(self):
        # resumable: a run resumed mid-epoch goes on with the batches it had not trained yet
        return self._loader("train", self.train_sampler(self.sets["train"].offsets, self.batch_size, self.seed))

    def val_dataloader(self):
        return [self._loader("val", SegmentBatchSampler(self.sets["val"].offsets, self.batch_size, shuffle=False))]

    def test_dataloader(self):
        return [self._loader("test", SegmentBatchSampler(self.sets["test"].offsets, self.batch_size, shuffle=False))]


def tokenizer_from_task_config(task: dict):
    """Rebuild a trained run's tokeniser from its saved task config (what zoo.sample does): bytes need
    nothing; BPE loads task.tokenizer_file, else the file cached for the same corpus and vocabulary size."""
    kind = task.get("tokenizer", "byte")
    corpus = None
    if kind == "bpe" and not task.get("tokenizer_file"):  # the cache is named by the corpus it was trained on
        corpus = load_corpus(task.get("path"), task.get("dataset"), task.get("dataset_config"),
                             task.get("dataset_split", "train"), task.get("text_field", "text"),
                             task.get("max_documents"))
    return resolve_tokenizer(corpus, kind, task.get("bpe_vocab_size", 2048), task.get("cache_dir"),
                             task.get("tokenizer_file"))
