"""The command line of ``chroma-orch instances upgrade`` and ``instances upgrades``
(on the ``instances`` group); ``instance_upgrades`` does the work."""

from __future__ import annotations

from typing import Annotated

import typer

from chroma_orch.cli_client import instance_upgrades
from chroma_orch.cli_client.exits import EXIT_CODES
from chroma_orch.cli_client.options import WAIT_TIMEOUT, Timeout, Wait, tenant_option, wait_flag
from chroma_orch.cli_client.runner import run

Instance = Annotated[
    str, typer.Argument(metavar="INSTANCE", help="instance id (or its name, if unique)")
]
LookupTenant = Annotated[str | None, tenant_option("look names up in this tenant only (admin)")]


def upgrade(
    ctx: typer.Context,
    instance: Instance,
    version: Annotated[
        str, typer.Option("--version", metavar="V", help="the Chroma version to upgrade to")
    ],
    tenant: LookupTenant = None,
    wait: Annotated[
        bool, wait_flag("the upgrade succeeded (exit 0), or was rolled back or cancelled (exit 9)")
    ] = False,
    timeout: Timeout = WAIT_TIMEOUT,
) -> int:
    wanted = Wait(wait, timeout)
    return run(
        ctx, lambda api, o: instance_upgrades.upgrade(api, o, instance, tenant, version, wanted)
    )


def upgrades(
    ctx: typer.Context,
    instance: Instance,
    upgrade_id: Annotated[
        str | None,
        typer.Argument(metavar="[UPGRADE_ID]", help="show this upgrade (default: list them all)"),
    ] = None,
    tenant: LookupTenant = None,
) -> int:
    if upgrade_id is None:
        return run(ctx, lambda api, o: instance_upgrades.ls(api, o, instance, tenant))
    return run(ctx, lambda api, o: instance_upgrades.get(api, o, instance, tenant, upgrade_id))


def add_upgrades(instances: typer.Typer) -> None:
    """``instances upgrade`` and ``instances upgrades`` (on the ``instances`` group)."""
    instances.command(
        "upgrade",
        help="upgrade an instance's Chroma version, guarded: a pre_upgrade snapshot, a restart "
        "on the new version and a parity probe; when the probe differs or the server does not "
        "come up, the version and the data are rolled back",
        epilog=EXIT_CODES,
    )(upgrade)
    instances.command(
        "upgrades",
        help="list an instance's guarded upgrades, newest first, or show one",
        epilog=EXIT_CODES,
    )(upgrades)
