"""The command line of ``chroma-orch tenants ...`` and ``chroma-orch tokens ...``;
``admin`` does the work."""

from __future__ import annotations

from typing import Annotated

import typer

from chroma_orch.cli_client import admin
from chroma_orch.cli_client.exits import EXIT_CODES
from chroma_orch.cli_client.runner import run

tenants = typer.Typer(help="manage tenants (admin)", no_args_is_help=True)
tokens = typer.Typer(help="issue tenant tokens (admin)", no_args_is_help=True)


@tenants.command("create", help="create a tenant", epilog=EXIT_CODES)
def tenants_create(ctx: typer.Context, name: Annotated[str, typer.Argument(metavar="NAME")]) -> int:
    return run(ctx, lambda api, o: admin.tenants_create(api, o, name))


@tenants.command("ls", help="list tenants", epilog=EXIT_CODES)
def tenants_ls(ctx: typer.Context) -> int:
    return run(ctx, admin.tenants_ls)


@tokens.command("create", help="issue a token; prints the secret once", epilog=EXIT_CODES)
def tokens_create(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Argument(metavar="TENANT_ID", help="tenant id (or name)")],
    name: Annotated[str, typer.Option("--name", help="token name (default 'default')")] = "default",
    expires_in: Annotated[
        int | None,
        typer.Option("--expires-in", metavar="SECONDS", help="lifetime (default: never expires)"),
    ] = None,
) -> int:
    return run(ctx, lambda api, o: admin.tokens_create(api, o, tenant, name, expires_in))
