"""Import the user's own modules by name (``imports=[my_package.mixers]``) so their ``@register_mixer`` /
``@register_mlp`` blocks are known before a model is built, from the command line or from a checkpoint."""
import importlib
import os
import sys


def import_modules(names) -> None:
    """Import each dotted module name; the current folder is searched too, as ``python -m`` would."""
    if isinstance(names, str):
        names = [names]
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    for name in names or ():
        if not isinstance(name, str) or not name:
            raise ValueError(f"imports: each entry must be a module name such as my_package.mixers, got {name!r}")
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            raise ValueError(f"imports: cannot import {name!r} ({error}); put the folder that holds it on "
                             f"PYTHONPATH or run from that folder") from None
        except Exception as error:  # the module itself is broken: say which one and how
            raise ValueError(f"imports: importing {name!r} failed: {type(error).__name__}: {error}") from None
