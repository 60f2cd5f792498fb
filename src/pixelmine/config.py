"""One config builder for every stage: keyword options (or a mapping from a file) -> a frozen dataclass.

Unknown keys are an :class:`~pixelmine.errors.InputError` listing the allowed ones, so a typo never
silently falls back to a default; passing both a config object and options is refused too.
"""

from __future__ import annotations

from dataclasses import fields
from typing import TypeVar

from .errors import InputError

Config = TypeVar("Config")


def check_keys(cls: type, keys, *, stage: str, prefix: str = "") -> None:
    """InputError naming the unknown keys and the allowed ones of dataclass ``cls``."""
    allowed = [f.name for f in fields(cls)]
    unknown = sorted(set(keys) - set(allowed))
    if unknown:
        raise InputError(f"unknown {stage} option(s) {', '.join(repr(prefix + k) for k in unknown)}; "
                         f"allowed: {', '.join(allowed)}")


def build_config(cls: type[Config], config: Config | None = None, options: dict | None = None, *,
                 stage: str) -> Config:
    """``config`` as it is, or ``cls(**options)`` after checking every key."""
    options = dict(options or {})
    if config is not None:
        if options:
            raise InputError(f"pass either config= (a {cls.__name__}) or keyword options to {stage}, not both "
                             f"(got {', '.join(sorted(options))})")
        if not isinstance(config, cls):
            raise InputError(f"the config of {stage} must be a {cls.__name__}; got {type(config).__name__}")
        return config
    check_keys(cls, options, stage=stage)
    try:
        return cls(**options)
    except TypeError as exc:  # a field given a value of a shape the dataclass cannot take
        raise InputError(f"invalid {stage} options: {exc}") from exc
