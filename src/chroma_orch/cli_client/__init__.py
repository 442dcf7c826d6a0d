"""The ``chroma-orch`` client commands (instances, tenants, tokens): a person at a
terminal, or a script, against a running service's /v1 API."""

from __future__ import annotations

import argparse
import os

from chroma_orch.cli_client import render
from chroma_orch.cli_client.api import DEFAULT_URL, Api
from chroma_orch.cli_client.credentials import resolve_token
from chroma_orch.cli_client.exits import CliError
from chroma_orch.cli_client.parser import COMMANDS, EXIT_CODES, add_commands, global_options

__all__ = ["COMMANDS", "EXIT_CODES", "add_commands", "global_options", "run"]


def run(args: argparse.Namespace) -> int:
    """Run a parsed client command; returns its exit code (see ``exits``)."""
    url = getattr(args, "url", None) or os.environ.get("CHROMA_ORCH_URL") or DEFAULT_URL
    args.json = bool(getattr(args, "json", False))
    try:
        with Api(url, resolve_token(args), streams=not getattr(args, "poll", False)) as api:
            code: int = args.handler(api, args)
            return code
    except CliError as exc:
        if args.json and exc.payload is not None:
            render.emit_json(exc.payload)
        render.err(f"error: {exc.message}")
        return exc.code
    except KeyboardInterrupt:
        render.err("interrupted")
        return 130
