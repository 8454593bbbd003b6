"""Argument checks shared by blocks, the trunk and tasks: a bad value fails naming itself and what is allowed."""


def require_positive_int(name: str, value, owner: str):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")


def require_positive_number(name: str, value, owner: str):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{owner}: {name} must be a positive number, got {value!r}")


def require_choice(name: str, value, choices, owner: str):
    if value not in choices:
        raise ValueError(f"{owner}: {name}={value!r} is not one of {', '.join(map(repr, choices))}")


def require_known_keywords(target, given, owner: str, skip=(), what: str = "setting"):
    """ValueError naming every key of ``given`` that ``target``'s signature does not take, listing the accepted
    ones (``skip``: parameters the caller fills itself, left out of the list). No check for a ``**kwargs`` target."""
    import inspect

    parameters = inspect.signature(target).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = [key for key in given if key not in parameters]
    if unknown:
        accepted = [name for name, p in parameters.items() if name not in ("self", *skip)
                    and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        raise ValueError(f"{owner}: unknown {what}{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(map(repr, unknown))}; accepted: {', '.join(accepted)}")
