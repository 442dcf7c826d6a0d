"""Where the client's API token comes from: ``--token-file PATH`` or the
environment (``CHROMA_ORCH_TOKEN``); ``--token`` still works but is discouraged,
since any local user sees a command line (``ps``, ``/proc/<pid>/cmdline``)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from chroma_orch.cli_client import render
from chroma_orch.cli_client.exits import USAGE, CliError
from chroma_orch.cli_client.options import Globals

ENV = "CHROMA_ORCH_TOKEN"


def resolve_token(options: Globals) -> str | None:
    """The token of ``--token-file``, else ``--token`` (with a warning), else
    ``$CHROMA_ORCH_TOKEN``; None when there is none."""
    flag, path = options.token, options.token_file
    if flag and path is not None:
        raise CliError(USAGE, "--token and --token-file: give only one")
    if path is not None:
        return read_token_file(path)
    if flag:
        render.err(
            f"warning: --token is visible to other users in the process list; "
            f"set {ENV} or use --token-file"
        )
        return flag
    return os.environ.get(ENV)


def read_token_file(path: Path) -> str:
    """The file's text without surrounding whitespace (a trailing newline);
    warns when group or others may read it."""
    try:
        text = path.read_text()
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise CliError(USAGE, f"cannot read the token file {path}: {reason}") from exc
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        render.err(f"warning: {path} can be read by other users (chmod 600 {path})")
    return text.strip()
