"""Name checks shared by the bench commands: an unknown mixer or preset fails at once, listing the known ones."""


def registered_mixers() -> list[str]:
    import zoo.blocks  # noqa: F401  (registers every block)
    from zoo.blocks.registry import MIXERS
    return sorted(MIXERS)


def resolve_mixers(requested: list[str] | None) -> list[str]:
    """The requested names in order (every registered mixer when None); ValueError naming unknown ones."""
    known = registered_mixers()
    if requested is None:
        return known
    unknown = [m for m in requested if m not in known]
    if unknown:
        raise ValueError(f"unknown mixer(s) {', '.join(map(repr, unknown))}; registered mixers: {', '.join(known)}")
    return list(dict.fromkeys(requested))


def resolve_preset(kind: str, name: str, presets: dict, public: tuple):
    if name not in presets:
        raise ValueError(f"unknown {kind} preset {name!r}; known presets: {', '.join(public)}")
    return presets[name]
