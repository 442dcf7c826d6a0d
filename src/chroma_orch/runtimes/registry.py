"""Runtimes by name, from the ``chroma_orch.runtimes`` entry point group.

A runtime is a package plus one entry point: ``NAME = "package.module:build"``,
where ``build(settings: chroma_orch.settings.Settings, services:
chroma_orch.runtimes.base.RuntimeServices) -> Runtime`` makes the driver
(``chroma_orch.runtimes.factory`` calls it). The built-in ``local``, ``ecs`` and
``sim`` are registered the same way, in pyproject.toml. ``Settings.runtime``
accepts the registered names (``check_name``).

Only the standard library and pydantic-settings here: ``chroma_orch.settings``
uses this module, so it sits below it (pyproject [tool.importlinter]).
"""

from __future__ import annotations

import functools
import sys
from importlib.metadata import EntryPoint, entry_points

from pydantic_settings import SettingsConfigDict

GROUP = "chroma_orch.runtimes"


class RegistryError(ValueError):
    """The entry points name an unknown runtime, or one runtime twice over."""


def registered() -> dict[str, EntryPoint]:
    """Every registered runtime's entry point by name, from the installed
    distributions (and any ``*.dist-info`` directory on ``sys.path``).

    The same name registered twice with the same target counts once (an installed
    and a development copy of one package); with different targets it is refused."""
    return dict(_registered(tuple(sys.path)))


@functools.lru_cache(maxsize=8)
def _registered(path: tuple[str, ...]) -> dict[str, EntryPoint]:
    """Read once per ``sys.path`` (scanning the distributions takes ~10 ms; every
    ``Settings`` checks its runtime name)."""
    found: dict[str, EntryPoint] = {}
    for point in entry_points(group=GROUP):
        seen = found.setdefault(point.name, point)
        if seen.value != point.value:
            raise RegistryError(
                f"runtime {point.name!r} is registered twice, as {seen.value!r} and "
                f"{point.value!r} (entry point group {GROUP!r})"
            )
    return found


def names() -> list[str]:
    return sorted(registered())


def check_name(name: str) -> str:
    """``name`` when a runtime is registered under it; else a ValueError naming those that are."""
    known = names()
    if name not in known:
        raise RegistryError(
            f"unknown runtime {name!r}; registered: {', '.join(known) or 'none'} (entry point "
            f"group {GROUP!r}; when the built-in ones are missing, reinstall chroma-orch)"
        )
    return name


def load(name: str) -> object:
    """What the runtime's entry point names (its ``build`` function), imported."""
    point = registered().get(check_name(name))
    assert point is not None
    return point.load()


def settings_config(name: str) -> SettingsConfigDict:
    """pydantic-settings configuration for a runtime's own settings group, read from
    ``CHROMA_ORCH_<NAME>__<FIELD>`` (what the built-in groups nested in
    ``chroma_orch.settings.Settings`` read too), for runtimes that are not built in."""
    return SettingsConfigDict(
        env_prefix=f"CHROMA_ORCH_{name.upper()}__", env_nested_delimiter="__", extra="ignore"
    )
