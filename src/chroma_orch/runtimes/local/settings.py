"""Settings of the ``local`` runtime (``CHROMA_ORCH_LOCAL__*``), next to its code.

Only pydantic here: ``chroma_orch.settings`` nests this group as ``Settings.local``.
"""

from __future__ import annotations

import re
import sys
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


MIN_MEMORY_MIB = 128
"""The smallest memory limit a local server gets (``RLIMIT_DATA``): measured on Chroma
1.5.8 and 1.5.9, a server under 128 MiB serves 5,000 384-dimension vectors; under 64 MiB
it starts but fails to index them (docs/local-runtime.md)."""


class ChromaVersionLauncher(BaseModel):
    """How the local runtime runs one Chroma version (``local.chroma_versions``)."""

    python: str | None = Field(
        None,
        description="Python interpreter with this chromadb version installed, used by the "
        "'bindings' launcher (e.g. .venvs/chroma-1.5.8/bin/python; `make chroma-venvs`).",
    )
    chroma_command: str | None = Field(
        None,
        description="The `chroma` console script of this version, used by the 'chroma-cli' "
        "launcher.",
    )


class LocalRuntimeSettings(BaseModel):
    """The ``local`` runtime: Chroma servers as child processes of the service."""

    host: str = Field(
        "127.0.0.1",
        description="Address local Chroma servers listen on. Keep it on loopback: "
        "Chroma has no authentication, the data plane enforces tokens.",
    )
    port_range: str = Field(
        "30000-30999",
        description="Inclusive port range (LOW-HIGH) from which instance ports are allocated.",
    )
    launcher: Literal["bindings", "chroma-cli"] = Field(
        "bindings",
        description="How a server is started: 'bindings' calls chromadb's Rust server from a "
        "minimal Python process (fast, low memory); 'chroma-cli' runs the `chroma run` "
        "console script (imports the whole chromadb package first).",
    )
    python: str = Field(
        sys.executable,
        description="Python interpreter with chromadb installed, used by the 'bindings' launcher.",
    )
    chroma_command: str = Field(
        "chroma",
        description="The `chroma` console script used by the 'chroma-cli' launcher. A root "
        "service runs it as system_user, which must be able to run it and its interpreter.",
    )
    chroma_versions: dict[str, ChromaVersionLauncher] = Field(
        {},
        description="More Chroma versions an instance's spec may ask for, by version: each "
        "names the interpreter ('bindings' launcher) or `chroma` command ('chroma-cli') that "
        'runs it, e.g. {"1.5.8": {"python": ".venvs/chroma-1.5.8/bin/python"}}. The '
        "version python/chroma_command above run (chromadb's installed version) is always "
        "known and the default.",
    )
    default_memory_mib: int | None = Field(
        None,
        ge=MIN_MEMORY_MIB,
        description="Memory limit (MiB, enforced as RLIMIT_DATA) of servers whose spec "
        "names none; None: unlimited. Resolved into each instance's spec when it is accepted.",
    )
    start_timeout: float = Field(
        60.0, gt=0, description="Seconds a server may take to answer its heartbeat."
    )
    launch_budget: float = Field(
        10.0,
        gt=0,
        description="Seconds after a start's recorded 'starting' during which it may still "
        "spawn its process (a port reserved first); past it a later pass retries.",
    )
    wake_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a proxied request to a culled wake-on-request instance is held "
        "while its server starts (a local server is up in well under a second; "
        "culling.wake_timeout overrides it).",
    )
    stop_grace: float = Field(
        10.0, ge=0, description="Seconds between SIGTERM and SIGKILL when stopping a server."
    )
    rust_log: str = Field(
        "warn", description="RUST_LOG for Chroma servers ('info' logs every request)."
    )
    niceness: int = Field(
        10,
        ge=0,
        le=19,
        description="How much lower than the service's the servers' CPU priority is (0: the "
        "same). All servers get it, tenants' and booting ones alike; when CPUs are short the "
        "service (its proxy, its starts) and its database come first. Chosen from what "
        "tenants see (bench/tenant_latency.py, docs/dataplane.md): while servers boot on "
        "their own, tenants' queries through the proxy took half as long (p50) as at 0; "
        "during launch storms through the API, 10 and 0 were within noise of each other.",
    )

    system_user: str = Field(
        "chroma-orch-server",
        description="Unprivileged user that runs the servers when the service runs as root "
        "(created if missing; servers do not start when it cannot be: no shared fallback "
        "such as 'nobody'). Must differ from embedded_db.system_user: PostgreSQL's files "
        "and socket must stay out of its reach.",
    )
    server_env: list[str] = Field(
        [],
        description="Names of variables of the service's environment also passed to the "
        'servers (e.g. ["SSL_CERT_FILE"]). Servers otherwise get only PATH, LANG, LC_ALL, '
        "LC_CTYPE, TZ, HOME (their data directory), RUST_LOG and ANONYMIZED_TELEMETRY; "
        "CHROMA_ORCH_ variables are refused.",
    )

    @field_validator("server_env")
    @classmethod
    def _check_server_env(cls, names: list[str]) -> list[str]:
        for name in names:
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not an environment variable name")
            if name.upper().startswith("CHROMA_ORCH_"):
                raise ValueError(f"{name}: the service's own settings never go to servers")
        return names

    @model_validator(mode="after")
    def _check_versions(self) -> LocalRuntimeSettings:
        needs = "python" if self.launcher == "bindings" else "chroma_command"
        for version, launcher in self.chroma_versions.items():
            if getattr(launcher, needs) is None:
                raise ValueError(
                    f"chroma_versions[{version!r}] names no {needs}, which the "
                    f"{self.launcher!r} launcher needs"
                )
        return self

    @field_validator("port_range")
    @classmethod
    def _check_range(cls, value: str) -> str:
        low, high = _parse_range(value)
        if not 1024 <= low <= high <= 65535:
            raise ValueError("port_range must be LOW-HIGH within 1024-65535")
        return value

    @property
    def ports(self) -> tuple[int, int]:
        return _parse_range(self.port_range)


def _parse_range(value: str) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in value.split("-", 1))
    except ValueError as exc:
        raise ValueError("expected LOW-HIGH, e.g. 30000-30999") from exc
    return low, high
