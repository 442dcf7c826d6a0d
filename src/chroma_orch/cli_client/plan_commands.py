"""The command line of ``chroma-orch plans ...``; ``plans`` does the work."""

from __future__ import annotations

from typing import Annotated

import typer

from chroma_orch.cli_client import plans
from chroma_orch.cli_client.exits import EXIT_CODES
from chroma_orch.cli_client.runner import run

app = typer.Typer(help="manage plans: default specs, allowed ranges, quotas (admin)",
                  no_args_is_help=True)  # fmt: skip

Name = Annotated[str, typer.Argument(metavar="NAME", help="plan name")]


@app.command("put", help="create or replace a plan (docs/specs.md)", epilog=EXIT_CODES)
def put(
    ctx: typer.Context,
    name: Name,
    definition: Annotated[
        str,
        typer.Argument(
            metavar="DEFINITION",
            help='the definition: a JSON file, or inline JSON ({"defaults": ..., '
            '"allowed": ..., "quota": ...})',
        ),
    ],
) -> int:
    return run(ctx, lambda api, o: plans.put(api, o, name, definition))


@app.command("ls", help="list plans", epilog=EXIT_CODES)
def ls(ctx: typer.Context) -> int:
    return run(ctx, plans.ls)


@app.command("get", help="show one plan", epilog=EXIT_CODES)
def get(ctx: typer.Context, name: Name) -> int:
    return run(ctx, lambda api, o: plans.get(api, o, name))


@app.command("delete", help="delete a plan no tenant has", epilog=EXIT_CODES)
def delete(ctx: typer.Context, name: Name) -> int:
    return run(ctx, lambda api, o: plans.delete(api, o, name))


@app.command("assign", help="give a tenant a plan (--default: the default plan)")
def assign(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Argument(metavar="TENANT", help="tenant id (or name)")],
    name: Annotated[str | None, typer.Argument(metavar="PLAN", help="plan name")] = None,
    default: Annotated[bool, typer.Option("--default", help="the default plan")] = False,
) -> int:
    if (name is None) == (not default):
        raise typer.BadParameter("give a PLAN or --default, not both", param_hint="PLAN")
    return run(ctx, lambda api, o: plans.assign(api, o, tenant, name))
