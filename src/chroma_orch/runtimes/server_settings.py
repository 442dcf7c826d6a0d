"""The Chroma server settings a tenant's spec may set (the whitelist), and the server
config file that carries them.

Chroma 1.x's ``chroma run`` takes either ``--path/--host/--port`` or one config file
(YAML) and never both, and ignores ``CHROMA_*`` variables for these settings: a server
with settings runs from a config file that also names its data path and address.
JSON is YAML, so the file is written as JSON. Everything else a config file could say
(persistence, the address, telemetry, the sysdb) stays the runtime's to decide.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

CONFIG_FILE_NAME = "chroma-config.yaml"


class ChromaServerSettings(BaseModel):
    """The whitelist: keys of Chroma's frontend config a tenant may set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_reset: bool | None = Field(
        None, description="Whether the server answers POST /api/v2/reset (deletes all data)."
    )
    max_payload_size_bytes: int | None = Field(
        None,
        ge=1024,
        le=1024**3,
        description="The largest request body the server accepts, in bytes.",
    )
    cors_allow_origins: list[str] | None = Field(
        None, max_length=32, description="Origins a browser may call the server from."
    )


def settings_problems(settings: Mapping[str, Any]) -> list[str]:
    """Why ``settings`` is not a valid whitelist of server settings (empty: it is)."""
    try:
        ChromaServerSettings.model_validate(dict(settings))
    except ValidationError as exc:
        return [_problem(error) for error in exc.errors()]
    return []


def _problem(error: Mapping[str, Any]) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "settings"
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(ChromaServerSettings.model_fields)
        return f"settings.{where} is not a server setting a spec may set (allowed: {allowed})"
    return f"settings.{where}: {error['msg']}"


def server_config(settings: Mapping[str, Any], *, persist_path: str, host: str, port: int) -> str:
    """The config file of a server with ``settings`` (validated), its data at
    ``persist_path``, listening on ``host``:``port``."""
    chosen = ChromaServerSettings.model_validate(dict(settings)).model_dump(exclude_none=True)
    document = {
        **chosen,
        "persist_path": persist_path,
        "listen_address": host,
        "port": port,
    }
    return json.dumps(document, indent=2) + "\n"
