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


def require_package(module: str, package: str, needed_by: str, extra: str, instead: str | None = None):
    """ValueError naming the install command when an optional package is missing (checked before any work)."""
    from importlib.util import find_spec

    if find_spec(module) is None:
        raise ValueError(f"{needed_by} needs the {package} package: pip install 'zoo[{extra}]'"
                         + (f" (or use {instead})" if instead else ""))


SCALARS = {bool: "true or false", int: "an integer", float: "a number", type(None): "null"}


def require_scalar_types(target, given: dict, owner: str):
    """ValueError for a value of the wrong kind (``max_epochs=abc``) where ``target``'s signature annotates a
    parameter with plain scalars only (int, float, bool, None); other annotations are left to ``target``."""
    import typing

    hints = typing.get_type_hints(target)
    for key, value in given.items():
        allowed = typing.get_args(hints.get(key)) or (hints.get(key),)
        if not allowed or not all(kind in SCALARS for kind in allowed):
            continue
        fits = (isinstance(value, bool) and bool in allowed or value is None and type(None) in allowed
                or not isinstance(value, bool) and (isinstance(value, int) and (int in allowed or float in allowed)
                                                   or isinstance(value, float) and float in allowed))
        if not fits:
            kinds = [SCALARS[k] for k in SCALARS if k in allowed and not (k is int and float in allowed)]
            raise ValueError(f"{owner}.{key} must be {' or '.join(kinds)}, got {value!r}")
