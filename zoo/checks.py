"""Argument checks shared by blocks, the trunk and tasks: a bad value fails naming itself and what is allowed."""


def require_positive_int(name: str, value, owner: str):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")


def require_choice(name: str, value, choices, owner: str):
    if value not in choices:
        raise ValueError(f"{owner}: {name}={value!r} is not one of {', '.join(map(repr, choices))}")
