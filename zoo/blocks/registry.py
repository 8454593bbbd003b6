"""Config names -> block classes. ``@register_mixer("name")`` on a class makes it usable as model=name."""
from torch import nn

from zoo.checks import require_known_keywords

MIXERS: dict[str, type[nn.Module]] = {}
MLPS: dict[str, type[nn.Module]] = {}


def _register(table: dict, kind: str, name: str):
    def add(cls):
        if name in table and table[name] is not cls:
            raise ValueError(f"{kind} name {name!r} is already taken by {table[name].__name__}")
        table[name] = cls
        return cls
    return add


def register_mixer(name: str):
    return _register(MIXERS, "mixer", name)


def register_mlp(name: str):
    return _register(MLPS, "mlp", name)


def _lookup(table: dict, kind: str, name: str):
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; known {kind}s: {', '.join(sorted(table))}")
    return table[name]


def build_mixer(name: str, d_model: int, layer_idx: int = 0, **hyper) -> nn.Module:
    cls = _lookup(MIXERS, "mixer", name)
    require_known_keywords(cls, hyper, f"mixer {name!r}", skip=("d_model", "layer_idx"), what="hyperparameter")
    return cls(d_model, layer_idx=layer_idx, **hyper)


def build_mlp(name: str, d_model: int, **hyper) -> nn.Module:
    cls = _lookup(MLPS, "mlp", name)
    require_known_keywords(cls, hyper, f"mlp {name!r}", skip=("d_model",), what="hyperparameter")
    return cls(d_model, **hyper)
