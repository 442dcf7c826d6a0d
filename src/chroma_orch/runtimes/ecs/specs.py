"""What an instance's spec means on ECS (``SpecSupport``), pure: its defaults come
from ``EcsSettings``, and its problems are sentences a tenant can act on.

- ``cpu``/``memory_mib``: a Fargate task size (``sizes``).
- ``architecture``: the task definition's ``runtimePlatform.cpuArchitecture``
  (``x86_64`` -> ``X86_64``, ``arm64`` -> ``ARM64``); every Linux size runs on
  either, Fargate Spot included (platform version 1.4.0 or later, the LATEST one:
  API reference, CapacityProviderStrategyItem).
- ``chroma_version``: the image's tag (``images``): a tag Docker accepts, and one
  of ``CHROMA_VERSIONS`` when that list is set.
- ``settings``: the whitelist of ``runtimes.server_settings``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from chroma_orch.runtimes.base import Architecture, ServerSpec, SpecCheck
from chroma_orch.runtimes.ecs.images import TAG, default_tag, retaggable
from chroma_orch.runtimes.ecs.settings import EcsSettings
from chroma_orch.runtimes.ecs.sizes import size_problem
from chroma_orch.runtimes.server_settings import settings_problems

CPU_ARCHITECTURES: dict[Architecture, str] = {
    Architecture.X86_64: "X86_64",
    Architecture.ARM64: "ARM64",
}
"""A spec's architecture as ECS's ``cpuArchitecture`` names it."""

ENFORCEMENT = {
    "cpu": "the Fargate task's CPU (task size): the server gets that share of the host",
    "memory": "the Fargate task's memory (task size): a task that exceeds it is stopped "
    "(OutOfMemory)",
}


def chroma_versions(settings: EcsSettings) -> list[str]:
    """The versions a spec may name, the default first (``CHROMA_VERSIONS``, else the
    default only; any well-formed tag is accepted when the list is empty)."""
    default = default_tag(settings)
    return [default, *(v for v in settings.chroma_versions if v != default)]


@dataclass(frozen=True)
class Filled:
    """A spec's fields on ECS, every one given (the settings' default where the spec
    had None)."""

    cpu: int
    memory: int
    architecture: Architecture
    tag: str


def filled(settings: EcsSettings, spec: ServerSpec) -> Filled:
    """``spec``'s fields, a None one the settings' default."""
    default = next(a for a, name in CPU_ARCHITECTURES.items() if name == settings.cpu_architecture)
    return Filled(
        cpu=settings.cpu if spec.cpu is None else spec.cpu,
        memory=settings.memory if spec.memory_mib is None else spec.memory_mib,
        architecture=spec.architecture or default,
        tag=spec.chroma_version or default_tag(settings),
    )


def check_spec(settings: EcsSettings, spec: ServerSpec) -> SpecCheck:
    """``spec`` resolved against the settings, and what keeps it from running."""
    given = filled(settings, spec)
    resolved = replace(
        spec,
        cpu=given.cpu,
        memory_mib=given.memory,
        architecture=given.architecture,
        chroma_version=given.tag,
    )
    problems = [
        problem
        for problem in (size_problem(given.cpu, given.memory), version_problem(settings, given.tag))
        if problem
    ]
    problems += settings_problems(spec.settings)
    return SpecCheck(resolved=resolved, problems=problems, enforcement=ENFORCEMENT)


def version_problem(settings: EcsSettings, version: str) -> str | None:
    """Why the image cannot be run at tag ``version`` (None: it can)."""
    if version == default_tag(settings):
        return None
    if not TAG.fullmatch(version):
        return (
            f"chroma_version {version!r} is not a valid image tag (letters, digits, '_', "
            "'.' and '-', at most 128, not starting with '.' or '-')"
        )
    if not retaggable(settings):
        return (
            f"chroma_version {version} is not available: this service's image is pinned "
            f"by digest and runs {default_tag(settings)} only"
        )
    if settings.chroma_versions and version not in settings.chroma_versions:
        offered = ", ".join(chroma_versions(settings))
        return f"chroma_version {version} is not offered on ECS (offered: {offered})"
    return None
