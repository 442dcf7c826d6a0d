"""The command line of ``chroma-orch snapshots ...`` and ``chroma-orch instances
clone``; ``snapshots`` does the work."""

from __future__ import annotations

from typing import Annotated

import typer

from chroma_orch.cli_client import snapshots
from chroma_orch.cli_client.exits import EXIT_CODES
from chroma_orch.cli_client.options import WAIT_TIMEOUT, Timeout, Wait, tenant_option, wait_flag
from chroma_orch.cli_client.runner import run

app = typer.Typer(
    help="snapshot instances' data, list, restore and delete snapshots", no_args_is_help=True
)

Instance = Annotated[
    str, typer.Argument(metavar="INSTANCE", help="instance id (or its name, if unique)")
]
SnapshotId = Annotated[str, typer.Argument(metavar="SNAPSHOT_ID", help="snapshot id")]
LookupTenant = Annotated[str | None, tenant_option("look names up in this tenant only (admin)")]


@app.command("create", help="snapshot an instance's data", epilog=EXIT_CODES)
def create(
    ctx: typer.Context,
    instance: Instance,
    tenant: LookupTenant = None,
    wait: Annotated[bool, wait_flag("the snapshot is ready or failed")] = False,
    timeout: Timeout = WAIT_TIMEOUT,
) -> int:
    wanted = Wait(wait, timeout)
    return run(ctx, lambda api, o: snapshots.create(api, o, instance, tenant, wanted))


@app.command("ls", help="list an instance's snapshots, newest first", epilog=EXIT_CODES)
def ls(ctx: typer.Context, instance: Instance, tenant: LookupTenant = None) -> int:
    return run(ctx, lambda api, o: snapshots.ls(api, o, instance, tenant))


@app.command("get", help="show one snapshot", epilog=EXIT_CODES)
def get(ctx: typer.Context, snapshot: SnapshotId) -> int:
    return run(ctx, lambda api, o: snapshots.get(api, o, snapshot))


@app.command("rm", help="delete a snapshot (its archive, then its record)", epilog=EXIT_CODES)
def rm(ctx: typer.Context, snapshot: SnapshotId) -> int:
    return run(ctx, lambda api, o: snapshots.rm(api, o, snapshot))


@app.command(
    "restore",
    help="replace an instance's data with a snapshot's (its current data is kept as a "
    "pre_restore snapshot first)",
    epilog=EXIT_CODES,
)
def restore(
    ctx: typer.Context,
    instance: Instance,
    snapshot: SnapshotId,
    tenant: LookupTenant = None,
    wait: Annotated[bool, wait_flag("it runs again on the restored data")] = False,
    timeout: Timeout = WAIT_TIMEOUT,
) -> int:
    wanted = Wait(wait, timeout)
    return run(ctx, lambda api, o: snapshots.restore(api, o, instance, snapshot, tenant, wanted))


def clone(
    ctx: typer.Context,
    snapshot: SnapshotId,
    name: Annotated[str, typer.Option("--name", help="the new instance's name (a DNS label)")],
    tenant: Annotated[
        str | None, tenant_option("the new instance's tenant (admin; default: the snapshot's)")
    ] = None,
    wait: Annotated[bool, wait_flag("it is running or failed")] = False,
    timeout: Timeout = WAIT_TIMEOUT,
) -> int:
    wanted = Wait(wait, timeout)
    return run(ctx, lambda api, o: snapshots.clone(api, o, snapshot, name, tenant, wanted))


def add_clone(instances: typer.Typer) -> None:
    """``instances clone`` (on the ``instances`` group)."""
    instances.command(
        "clone", help="launch a new instance from a snapshot's data", epilog=EXIT_CODES
    )(clone)
