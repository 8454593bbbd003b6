"""JRT-Prompt ("Just read twice", Arora et al. 2024): repeat the context before the queries.

A recurrent model reading ``context, context, queries`` sees every part of the context again after having seen
all of it once, so it can decide what to keep with the whole context known. Every recall task states its
context length (the leading positions that hold no scored label), and this one function turns any of its draws
into the read-twice form, so the mechanism is shared by every task rather than copied into each.

``task.read_twice`` is one of three settings (``read_twice_setting``):

- ``off``: every split read once.
- ``train_and_test``: every split read twice (trained on the doubled prompt too; ``true`` before the settings).
- ``test_only``: JRT-Prompt as the paper uses it, a prompt given at inference to a model trained normally: the
  train split is read once, validation and test twice. Validation follows test because it stands for test
  (checkpoints, early stopping and the suite's lr are chosen on it): in ``test_only`` a model is chosen and
  scored on the doubled prompt it is evaluated with.

Booleans stay accepted (false = off, true = train_and_test) so old configs and run files keep their meaning.
"""
import torch

from zoo.tasks.data import IGNORE_INDEX

OFF, TRAIN_AND_TEST, TEST_ONLY = "off", "train_and_test", "test_only"
READ_TWICE_SETTINGS = (OFF, TRAIN_AND_TEST, TEST_ONLY)


def read_twice_setting(value, owner: str = "read_twice") -> str:
    """The setting named by ``value`` (one of READ_TWICE_SETTINGS, or a bool alias); ValueError otherwise."""
    if isinstance(value, bool):
        return TRAIN_AND_TEST if value else OFF
    if isinstance(value, str) and value in READ_TWICE_SETTINGS:
        return value
    raise ValueError(f"{owner}: read_twice must be one of {', '.join(READ_TWICE_SETTINGS)} (or false / true for "
                     f"off / train_and_test), got {value!r}")


def reads_twice(setting: str, split: str) -> bool:
    """Whether ``split`` ("train", "validation" or "test") is read twice under ``setting``."""
    return setting == TRAIN_AND_TEST or (setting == TEST_ONLY and split != "train")


def repeat_context(inputs: torch.Tensor, labels: torch.Tensor, context_len: int):
    """(inputs, labels) of shape (n, L) -> (n, L + context_len): ``inputs[:, :context_len]`` is read twice.

    Labels stay at their answer positions (shifted by the inserted copy); the copy itself scores nothing.
    """
    if not 0 < context_len <= inputs.shape[1]:
        raise ValueError(f"read_twice: context_len must be in [1, {inputs.shape[1]}], got {context_len}")
    if bool((labels[:, :context_len] != IGNORE_INDEX).any()):
        raise ValueError("read_twice: the context to repeat holds scored labels; only a prefix without answers "
                         "can be read twice")
    copy = inputs[:, :context_len]
    unscored = torch.full_like(copy, IGNORE_INDEX)
    return torch.cat([copy, inputs], dim=1).contiguous(), torch.cat([unscored, labels], dim=1).contiguous()
