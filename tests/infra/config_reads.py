"""Which configuration keys each stack reads, recorded while the app is built and synthesized.

The update-safety tests synthesize, for each key, only the stacks that read it (the other stacks cannot change
when it does). What a stack reads is observed, not declared: :func:`recorded_reads` hands ``build_app`` a
KitConfig that notes every attribute read and the stack being built when it was read (the nearest ``self``
on the call stack that is a ``cdk.Stack``). A property or method of KitConfig runs on the recorder, so what it
reads is noted too. A read outside any stack (the app's own, or one made late during synthesis) counts for
every stack. A level's settings model counts as a whole: reading ``config.rag`` reads every ``rag_*`` key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MethodType
from typing import Any

from stacks.config import EVERY_MODEL_READS, LEVEL_SETTINGS, KitConfig
from stacks.shared.settings import context_keys

APP = ""  # reads made outside any stack: they count for every stack


@dataclass
class Reads:
    """KitConfig attribute names read, by the id of the stack being built ("" for the app itself)."""

    by_stack: dict[str, set[str]] = field(default_factory=dict)

    def note(self, stack_id: str, name: str) -> None:
        self.by_stack.setdefault(stack_id, set()).add(name)

    def merge(self, other: Reads) -> None:
        for stack_id, names in other.by_stack.items():
            self.by_stack.setdefault(stack_id, set()).update(names)


def _building_stack() -> str:
    """The id of the innermost cdk.Stack on the call stack ("" when there is none)."""
    import aws_cdk as cdk

    frame = sys._getframe(2)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, cdk.Stack):
            with contextlib.suppress(Exception):  # a stack whose constructor has not reached super().__init__
                return str(owner.node.id)
        frame = frame.f_back  # type: ignore[assignment]
    return APP


class ConfigRecorder:
    """Stands in for a KitConfig and notes, per stack, which of its attributes are read."""

    def __init__(self, real: KitConfig, reads: Reads) -> None:
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "_reads", reads)
        object.__setattr__(self, "_fields", frozenset(f.name for f in dataclasses.fields(real)))

    def __getattr__(self, name: str) -> Any:
        real: KitConfig = object.__getattribute__(self, "_real")
        if name in object.__getattribute__(self, "_fields"):
            object.__getattribute__(self, "_reads").note(_building_stack(), name)
            return getattr(real, name)
        attr = inspect.getattr_static(real, name, None)
        if isinstance(attr, property) and attr.fget is not None:
            return attr.fget(self)
        if isinstance(attr, cached_property):
            return attr.func(self)
        if inspect.isfunction(attr):
            return MethodType(attr, self)
        raise AttributeError(f"KitConfig has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(name)


@contextlib.contextmanager
def recorded_reads() -> Iterator[Reads]:
    """While open, ``app.build_app`` hands its stacks a :class:`ConfigRecorder`; the reads land in the result."""
    import app as app_module

    reads = Reads()
    load = app_module.load_config

    def recording_load(*args: Any, **kwargs: Any) -> Any:
        return ConfigRecorder(load(*args, **kwargs), reads)

    app_module.load_config = recording_load  # type: ignore[assignment]
    try:
        yield reads
    finally:
        app_module.load_config = load


def unwrapped(config: Any) -> KitConfig:
    """The KitConfig behind a recorder (or the config itself)."""
    if isinstance(config, ConfigRecorder):
        real: KitConfig = object.__getattribute__(config, "_real")
        return real
    return config  # type: ignore[no-any-return]


def keys_of(config: KitConfig, names: Iterable[str]) -> set[str]:
    """The context keys behind KitConfig attributes: a level's settings model stands for all its keys, a plain
    attribute for the kit-wide key of that name (as field or alias), both with EVERY_MODEL_READS; a plain
    attribute no key names stands for every kit-wide key. test_update_safety checks this against load_config,
    one changed key at a time."""
    sections = {name: type(value) for name, value in vars(config).items() if isinstance(value, LEVEL_SETTINGS)}
    kit_wide_models = [model for model in LEVEL_SETTINGS if model not in sections.values()]
    kit_wide = {key for model in kit_wide_models for key in context_keys(model)}
    keys: set[str] = set()
    for name in names:
        if name in sections:  # its own keys and what every model may read
            keys |= set(context_keys(sections[name])) | set(EVERY_MODEL_READS)
            continue
        named = {
            str(info.alias)
            for model in kit_wide_models
            for field_name, info in model.model_fields.items()
            if name in (field_name, info.alias)
        }
        # A kit-wide value left null in cdk.json is decided by the stage (e.g. log_retention_days).
        keys |= named | set(EVERY_MODEL_READS) if named else kit_wide
    return keys


def reach(config: KitConfig, reads: Reads, stack_ids: Iterable[str]) -> dict[str, set[str]]:
    """stack id -> the keys it reads (its own reads and the app's)."""
    everyone = reads.by_stack.get(APP, set())
    return {stack_id: keys_of(config, reads.by_stack.get(stack_id, set()) | everyone) for stack_id in stack_ids}


def stacks_reading(key: str, reach_by_stack: Mapping[str, set[str]]) -> list[str]:
    return sorted(stack_id for stack_id, keys in reach_by_stack.items() if key in keys)
