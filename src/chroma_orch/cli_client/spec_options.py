"""The spec and label flags of ``instances launch`` and ``instances update``
(``--cpu``, ``--memory``, ``--chroma-version``, ``--setting k=v``, ``--label k=v``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

Cpu = Annotated[
    int | None, typer.Option("--cpu", metavar="UNITS", help="CPU units (1024 = 1 vCPU)")
]
Memory = Annotated[int | None, typer.Option("--memory", metavar="MIB", help="memory in MiB")]
ChromaVersion = Annotated[
    str | None, typer.Option("--chroma-version", metavar="VERSION", help="Chroma server version")
]
Settings = Annotated[
    list[str] | None,
    typer.Option(
        "--setting",
        metavar="KEY=VALUE",
        help="a Chroma server setting (VALUE as JSON, else a string; repeatable)",
    ),
]
Labels = Annotated[
    list[str] | None,
    typer.Option("--label", metavar="KEY=VALUE", help="a label (repeatable)"),
]


def pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    """``KEY=VALUE`` items as a map (``BadParameter`` for one without ``=``)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=flag)
        out[key] = value
    return out


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


@dataclass(frozen=True)
class SpecFlags:
    """The spec a command line asks for (only what it names)."""

    cpu: int | None = None
    memory_mib: int | None = None
    chroma_version: str | None = None
    settings: dict[str, str] = field(default_factory=dict)

    def request(self) -> dict[str, Any] | None:
        spec: dict[str, Any] = {
            key: value
            for key, value in (
                ("cpu", self.cpu),
                ("memory_mib", self.memory_mib),
                ("chroma_version", self.chroma_version),
            )
            if value is not None
        }
        if self.settings:
            spec["settings"] = {k: _json_or_text(v) for k, v in self.settings.items()}
        return spec or None


def spec_flags(
    cpu: int | None, memory: int | None, version: str | None, settings: list[str] | None
) -> SpecFlags:
    return SpecFlags(cpu, memory, version, pairs(settings, "--setting"))
