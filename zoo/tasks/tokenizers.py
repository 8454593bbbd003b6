"""Tokenisers for the text task: bytes (the default, nothing to train or store) and BPE (the `tokenizers` library).

Both share one special token, ``<|endoftext|>``, written between documents. ``byte_lengths()`` gives the UTF-8
bytes each token id stands for (the end-of-text token counts as one byte, like the newline it replaces), so
bits per byte is the same quantity whichever tokeniser produced the tokens.
"""
import hashlib
import json
from pathlib import Path

import numpy as np

END_OF_TEXT = "<|endoftext|>"


class ByteTokenizer:
    """UTF-8 bytes 0-255, then the end-of-text token (id 256): vocab_size 257."""

    kind = "byte"

    def __init__(self):
        self.eos_id = 256
        self.vocab_size = 257

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids) -> str:
        data = bytes(int(i) for i in ids if int(i) < 256)
        return data.decode("utf-8", errors="replace")

    def byte_lengths(self) -> np.ndarray:
        return np.ones(self.vocab_size, dtype=np.int64)

    def describe(self) -> dict:
        return {"tokenizer": "byte"}


class BPETokenizer:
    """Byte-level BPE from `tokenizers`: every string round-trips exactly (no normalisation, no prefix space)."""

    kind = "bpe"

    def __init__(self, file: str | Path):
        from tokenizers import Tokenizer  # optional package: pip install 'zoo[text]'

        self.file = str(file)
        self.tokenizer = Tokenizer.from_file(self.file)
        self.eos_id = self.tokenizer.token_to_id(END_OF_TEXT)
        if self.eos_id is None:
            raise ValueError(f"BPE tokenizer file {self.file} has no {END_OF_TEXT} token")
        self.vocab_size = self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    def byte_lengths(self) -> np.ndarray:
        # byte-level BPE writes each byte as one printable character, so a token's length is its byte count
        lengths = np.ones(self.vocab_size, dtype=np.int64)
        for token, index in self.tokenizer.get_vocab().items():
            if token != END_OF_TEXT:
                lengths[index] = len(token)
        return lengths

    def describe(self) -> dict:
        return {"tokenizer": "bpe", "tokenizer_file": self.file}


def train_bpe(texts, vocab_size: int, file: Path) -> BPETokenizer:
    """Train byte-level BPE on an iterable of strings and save it to ``file`` (written atomically)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[END_OF_TEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    partial = file.with_name(file.name + ".partial")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tokenizer.save(str(partial))
        partial.replace(file)
    except Exception as error:  # a read-only or missing cache folder: one line naming it
        raise ValueError(f"cannot write the BPE tokenizer cache {file} ({type(error).__name__}: {error}); set "
                         f"task.cache_dir to a writable folder") from None
    return BPETokenizer(file)


def bpe_cache_file(cache_dir: Path, corpus_name: str, corpus_identity: dict, vocab_size: int) -> Path:
    """Where the BPE for a corpus lives: named by the corpus, the vocabulary size and a hash of both, so a
    changed corpus (another size or modification time) never reuses a stale tokenizer."""
    key = json.dumps({"corpus": corpus_identity, "vocab_size": vocab_size}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    safe_name = "".join(c if c.isalnum() or c in "-_." else "_" for c in corpus_name)
    return cache_dir / f"{safe_name}.bpe{vocab_size}-{digest}.json"
