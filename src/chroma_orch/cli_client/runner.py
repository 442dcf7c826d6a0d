"""Running one client command: the service and token from the global options,
and every ``CliError`` turned into its message and exit code (see ``exits``)."""

from __future__ import annotations

import os
from collections.abc import Callable

import typer

from chroma_orch.cli_client import render
from chroma_orch.cli_client.api import DEFAULT_URL, Api
from chroma_orch.cli_client.credentials import resolve_token
from chroma_orch.cli_client.exits import CliError
from chroma_orch.cli_client.options import Globals, globals_of

Action = Callable[[Api, Globals], int]
"""What a command does, given the service and the global options; returns its exit code."""


def run(ctx: typer.Context, action: Action) -> int:
    """Run ``action`` against the service the global options name; returns its exit code."""
    options = globals_of(ctx)
    url = options.url or os.environ.get("CHROMA_ORCH_URL") or DEFAULT_URL
    try:
        with Api(url, resolve_token(options), streams=not options.poll) as api:
            return action(api, options)
    except CliError as exc:
        if options.json and exc.payload is not None:
            render.emit_json(exc.payload)
        render.error(exc.message)
        return exc.code
    except KeyboardInterrupt:
        render.err("interrupted")
        return 130
