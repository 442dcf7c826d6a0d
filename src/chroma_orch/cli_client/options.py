"""Options of the client commands: the global ones (--url, --token-file, --token,
--json, --poll), accepted before or after any subcommand, and the ones several
commands share (--wait, --timeout)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup, TyperOption

from chroma_orch.cli_client.api import DEFAULT_URL

WAIT_TIMEOUT = 600.0
_PANEL = "Connection and output"


@dataclass
class Globals:
    """The global options as given; a later one (closer to the command) wins."""

    url: str | None = None
    token_file: Path | None = None
    token: str | None = None
    json: bool = False
    poll: bool = False


def globals_of(ctx: typer.Context) -> Globals:
    """The global options seen so far on this command line."""
    return ctx.ensure_object(Globals)


def _remember(field: str) -> Callable[[typer.Context, typer.CallbackParam, Any], None]:
    def store(ctx: typer.Context, _param: typer.CallbackParam, value: Any) -> None:
        found = globals_of(ctx)
        if value is not None and value is not False:
            setattr(found, field, Path(value) if field == "token_file" else value)

    return store


def _option(
    decl: str, help_: str, *, flag: bool = False, metavar: str | None = None
) -> TyperOption:
    field = decl.removeprefix("--").replace("-", "_")
    return TyperOption(
        param_decls=[decl],
        help=help_,
        is_flag=flag or None,
        default=False if flag else None,
        metavar=metavar,
        callback=_remember(field),
        expose_value=False,
        rich_help_panel=_PANEL,
    )


def _global_options() -> list[TyperOption]:
    return [
        _option("--url", f"service URL (CHROMA_ORCH_URL, default {DEFAULT_URL})"),
        _option(
            "--token-file",
            "read the API token from PATH (or set CHROMA_ORCH_TOKEN)",
            metavar="PATH",
        ),
        _option("--token", "API token; discouraged: other users see it in the process list"),
        _option("--json", "machine-readable JSON on stdout", flag=True),
        _option(
            "--poll",
            "use HTTP polling, not WebSockets, for --wait and --follow "
            "(e.g. behind a proxy without WebSocket support)",
            flag=True,
        ),
    ]


def add_global_options(command: Any, *, recursive: bool = True) -> None:
    """Give ``command`` (a typer-made click command; when ``recursive``, every
    command under it too) the global options."""
    command.params.extend(_global_options())
    if recursive and isinstance(command, TyperGroup):
        for sub in command.commands.values():
            add_global_options(sub)


def wait_flag(what: str) -> Any:
    """``--wait``: show progress until ``what``."""
    return typer.Option("--wait", help=f"show progress until {what}")


Timeout = Annotated[
    float,
    typer.Option(
        "--timeout", help=f"seconds --wait waits (default {WAIT_TIMEOUT:g})", show_default=False
    ),
]


def tenant_option(help_: str) -> Any:
    """``--tenant TENANT``: an id or a name."""
    return typer.Option("--tenant", metavar="TENANT", help=help_ + "; an id or a name")


@dataclass(frozen=True)
class Wait:
    """``--wait`` and ``--timeout`` of one command."""

    enabled: bool
    timeout: float = WAIT_TIMEOUT
