"""The local runtime's specs: which Chroma versions it runs (and with what), and
whether a spec fits it (``SpecSupport.check_spec``; docs/local-runtime.md).

The default version is chromadb's installed version as the default launcher sees it:
the interpreter ``local.python`` names (it may not be the service's own), or for the
'chroma-cli' launcher the interpreter of the ``chroma`` script's shebang. It is found
once, when the runtime is built; ``check_spec`` itself does no I/O.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from chroma_orch.runtimes.base import ServerSpec, SpecCheck
from chroma_orch.runtimes.local.launch import ServerLaunch
from chroma_orch.runtimes.local.settings import MIN_MEMORY_MIB, LocalRuntimeSettings
from chroma_orch.runtimes.server_settings import settings_problems

_ASK_VERSION = "import importlib.metadata as m; print(m.version('chromadb'))"

MEMORY_ENFORCEMENT = (
    "RLIMIT_DATA of the server process (its private writable memory: heap, anonymous "
    "mappings, thread stacks; not file-backed pages): allocations beyond it fail"
)
UNLIMITED_MEMORY = "not limited (no memory_mib)"
CPU_ENFORCEMENT = (
    "not enforced by the local runtime: every server shares the host's CPUs at "
    "local.niceness (the value is kept for plans and quotas)"
)


def chromadb_version(python: str) -> str | None:
    """chromadb's version as ``python`` sees it (None: not installed or not runnable)."""
    # not realpath: a venv's python is a symlink to the base interpreter, whose
    # site-packages differ
    if os.path.abspath(shutil.which(python) or python) == os.path.abspath(sys.executable):
        try:
            return importlib.metadata.version("chromadb")
        except importlib.metadata.PackageNotFoundError:
            return None
    try:
        done = subprocess.run(
            [python, "-I", "-c", _ASK_VERSION], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def script_interpreter(command: str) -> str | None:
    """The interpreter a console script's shebang names (None: not a script)."""
    found = shutil.which(command)
    if found is None:
        return None
    try:
        with Path(found).open("rb") as script:
            first = script.readline(4096)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    parts = first[2:].decode(errors="replace").split()
    return parts[0] if parts else None


@dataclass(frozen=True)
class LocalVersions:
    """The Chroma versions a local runtime runs: its default first, each with what
    launches it."""

    default: str
    launchers: dict[str, ServerLaunch]

    @classmethod
    def from_settings(cls, settings: LocalRuntimeSettings) -> LocalVersions:
        if settings.launcher == "bindings":
            python: str | None = settings.python
        else:
            python = script_interpreter(settings.chroma_command)
        default = (chromadb_version(python) if python else None) or "installed"
        launchers = {default: ServerLaunch(settings.python, settings.chroma_command, default)}
        for version, entry in settings.chroma_versions.items():
            launchers.setdefault(
                version,
                ServerLaunch(
                    _absolute(entry.python or settings.python),
                    _absolute(entry.chroma_command or settings.chroma_command),
                    version,
                ),
            )
        return cls(default, launchers)

    def names(self) -> list[str]:
        return [self.default, *(v for v in self.launchers if v != self.default)]


def check_local_spec(
    spec: ServerSpec, versions: LocalVersions, default_memory_mib: int | None
) -> SpecCheck:
    """``spec`` with the local runtime's defaults filled in, and why it cannot run."""
    resolved = replace(
        spec,
        chroma_version=spec.chroma_version or versions.default,
        memory_mib=default_memory_mib if spec.memory_mib is None else spec.memory_mib,
    )
    problems = list(settings_problems(spec.settings))
    if resolved.chroma_version not in versions.launchers:
        known = ", ".join(versions.names())
        problems.append(
            f"Chroma {resolved.chroma_version} is not available on the local runtime "
            f"(available: {known})"
        )
    memory = resolved.memory_mib
    if memory is not None and memory < MIN_MEMORY_MIB:
        problems.append(
            f"{memory} MiB is too little memory for a local Chroma server "
            f"(at least {MIN_MEMORY_MIB} MiB)"
        )
    if spec.cpu is not None and spec.cpu <= 0:
        problems.append(f"cpu must be positive, not {spec.cpu}")
    if spec.architecture is not None and spec.architecture.value != _host_architecture():
        problems.append(
            f"the local runtime runs on {_host_architecture()} only, not {spec.architecture.value}"
        )
    enforcement = {
        "memory": MEMORY_ENFORCEMENT if memory is not None else UNLIMITED_MEMORY,
        "cpu": CPU_ENFORCEMENT,
    }
    return SpecCheck(resolved, problems, enforcement)


def _absolute(program: str) -> str:
    """A relative path (".venvs/...") made absolute: servers start in their data
    directory, where it would not resolve. A bare name stays one (found on PATH)."""
    return os.path.abspath(program) if os.sep in program else program


def _host_architecture() -> str:
    machine = os.uname().machine
    return {"aarch64": "arm64", "amd64": "x86_64"}.get(machine, machine)
