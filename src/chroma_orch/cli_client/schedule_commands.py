"""The command line of ``chroma-orch snapshots schedule ...``; ``schedules`` does the work."""

from __future__ import annotations

from typing import Annotated

import typer

from chroma_orch.cli_client import durations, schedules
from chroma_orch.cli_client.exits import EXIT_CODES
from chroma_orch.cli_client.options import tenant_option
from chroma_orch.cli_client.runner import run

app = typer.Typer(
    help="scheduled snapshots of an instance, or of every instance of a tenant (--tenant "
    "without INSTANCE); an instance's own schedule overrides its tenant's",
    no_args_is_help=True,
)

Instance = Annotated[
    str | None,
    typer.Argument(
        metavar="[INSTANCE]",
        help="instance id (or its name, if unique); without it, --tenant's schedule",
        show_default=False,
    ),
]
Tenant = Annotated[
    str | None,
    tenant_option(
        "with INSTANCE: look its name up in this tenant only (admin); without: this "
        "tenant's schedule, for its instances without their own (admin)"
    ),
]


def _target(instance: str | None, tenant: str | None) -> schedules.Target:
    if instance is None and tenant is None:
        raise typer.BadParameter(
            "name an INSTANCE, or a tenant with --tenant", param_hint="INSTANCE"
        )
    return schedules.Target(instance, tenant)


@app.command("set", help="take a snapshot every EVERY, keeping the newest KEEP", epilog=EXIT_CODES)
def set_(
    ctx: typer.Context,
    every: Annotated[
        int,
        typer.Option(
            "--every",
            metavar="DURATION",
            parser=durations.parse,
            help="time between snapshots: seconds, or 30m, 6h, 1d, 1w, 1h30m (at least 1m)",
        ),
    ],
    keep: Annotated[
        int,
        typer.Option("--keep", min=1, help="ready scheduled snapshots kept (older are deleted)"),
    ],
    instance: Instance = None,
    tenant: Tenant = None,
) -> int:
    target = _target(instance, tenant)
    return run(ctx, lambda api, o: schedules.set_(api, o, target, every, keep))


@app.command("get", help="show the schedule that applies", epilog=EXIT_CODES)
def get(ctx: typer.Context, instance: Instance = None, tenant: Tenant = None) -> int:
    target = _target(instance, tenant)
    return run(ctx, lambda api, o: schedules.get(api, o, target))


@app.command(
    "rm",
    help="remove an instance's own schedule (its tenant's applies again) or a tenant's",
    epilog=EXIT_CODES,
)
def rm(ctx: typer.Context, instance: Instance = None, tenant: Tenant = None) -> int:
    target = _target(instance, tenant)
    return run(ctx, lambda api, o: schedules.rm(api, o, target))
