"""The command line of ``chroma-orch instances ...``; ``instances`` does the work."""

from __future__ import annotations

from typing import Annotated

import typer

from chroma_orch.cli_client import instances
from chroma_orch.cli_client.exits import EXIT_CODES
from chroma_orch.cli_client.options import WAIT_TIMEOUT, Timeout, Wait, tenant_option, wait_flag
from chroma_orch.cli_client.runner import run
from chroma_orch.cli_client.spec_options import (
    ChromaVersion,
    Cpu,
    Labels,
    Memory,
    Settings,
    pairs,
    spec_flags,
)

app = typer.Typer(help="launch and manage instances", no_args_is_help=True)

Ref = Annotated[str, typer.Argument(metavar="ID", help="instance id (or its name, if unique)")]
LookupTenant = Annotated[str | None, tenant_option("look names up in this tenant only (admin)")]


@app.command("launch", help="launch a new instance", epilog=EXIT_CODES)
@app.command("create", help="launch a new instance (as launch)", epilog=EXIT_CODES)
def launch(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="instance name (a DNS label)")],
    tenant: Annotated[
        str | None, tenant_option("owning tenant (required with an admin token)")
    ] = None,
    wait: Annotated[bool, wait_flag("it is running or failed")] = False,
    timeout: Timeout = WAIT_TIMEOUT,
    cpu: Cpu = None,
    memory: Memory = None,
    chroma_version: ChromaVersion = None,
    setting: Settings = None,
    label: Labels = None,
) -> int:
    new = instances.NewInstance(
        name, tenant, spec_flags(cpu, memory, chroma_version, setting), pairs(label, "--label")
    )
    return run(ctx, lambda api, o: instances.launch(api, o, new, Wait(wait, timeout)))


@app.command(
    "update",
    help="change an instance's spec (a running one restarts on it; a stopped one gets it "
    "at its next start) or replace its labels",
    epilog=EXIT_CODES,
)
def update(
    ctx: typer.Context,
    instance: Ref,
    tenant: LookupTenant = None,
    cpu: Cpu = None,
    memory: Memory = None,
    chroma_version: ChromaVersion = None,
    setting: Settings = None,
    label: Labels = None,
    wait: Annotated[bool, wait_flag("the new spec took effect")] = False,
    timeout: Timeout = WAIT_TIMEOUT,
) -> int:
    spec = spec_flags(cpu, memory, chroma_version, setting).request()
    labels = pairs(label, "--label") if label else None
    if spec is None and labels is None:
        raise typer.BadParameter("nothing to change", param_hint="--cpu/--memory/--label ...")
    change = instances.Change(spec, labels, Wait(wait, timeout))
    return run(ctx, lambda api, o: instances.update(api, o, instance, tenant, change))


@app.command("ls", help="list instances", epilog=EXIT_CODES)
def ls(
    ctx: typer.Context,
    tenant: Annotated[str | None, tenant_option("only this tenant's instances (admin)")] = None,
    deleted: Annotated[
        bool,
        typer.Option(
            "--deleted", help="list the deleted instances that can still be undeleted instead"
        ),
    ] = False,
) -> int:
    return run(ctx, lambda api, o: instances.ls(api, o, tenant, deleted))


@app.command("get", help="show one instance", epilog=EXIT_CODES)
def get(ctx: typer.Context, instance: Ref, tenant: LookupTenant = None) -> int:
    return run(ctx, lambda api, o: instances.get(api, o, instance, tenant))


def _action(action: str, help_: str, until: str) -> None:
    """start, stop, restart: one command each; --wait's help says what it waits for
    (a default, not an annotation, since annotations cannot see ``until``)."""

    def command(
        ctx: typer.Context,
        instance: Ref,
        tenant: LookupTenant = None,
        wait: bool = typer.Option(False, "--wait", help=f"show progress until {until}"),
        timeout: Timeout = WAIT_TIMEOUT,
    ) -> int:
        wanted = Wait(wait, timeout)
        return run(ctx, lambda api, o: instances.act(api, o, action, instance, tenant, wanted))

    app.command(action, help=help_, epilog=EXIT_CODES)(command)


_action("start", "start a stopped or failed instance", "it is running")
_action("stop", "stop an instance (its data is kept)", "it is stopped")
_action("restart", "restart a running instance", "it is running")


@app.command(
    "delete",
    help="delete an instance: its data is kept as a pre_delete snapshot, and it can be "
    "undeleted until the retention of deleted instances has passed (--purge: at once and "
    "for good)",
    epilog=EXIT_CODES,
)
def delete(
    ctx: typer.Context,
    instance: Ref,
    tenant: LookupTenant = None,
    keep_data: Annotated[bool, typer.Option("--keep-data", help="keep the data directory")] = False,
    purge: Annotated[
        bool,
        typer.Option(
            "--purge",
            help="take no pre_delete snapshot and delete every snapshot of the instance: it "
            "cannot be undeleted (also purges an already deleted instance); not with --keep-data",
        ),
    ] = False,
    wait: Annotated[bool, wait_flag("it is gone")] = False,
    timeout: Timeout = WAIT_TIMEOUT,
) -> int:
    if purge and keep_data:
        raise typer.BadParameter("it removes the data: not with --keep-data", param_hint="--purge")
    how = instances.Deletion(keep_data, purge, Wait(wait, timeout))
    return run(ctx, lambda api, o: instances.delete(api, o, instance, tenant, how))


@app.command(
    "undelete",
    help="bring a deleted instance back with the data of its pre_delete snapshot",
    epilog=EXIT_CODES,
)
def undelete(
    ctx: typer.Context,
    instance: Annotated[
        str,
        typer.Argument(metavar="INSTANCE", help="deleted instance's id (or its name, if unique)"),
    ],
    tenant: LookupTenant = None,
    wait: Annotated[bool, wait_flag("it is running")] = False,
    timeout: Timeout = WAIT_TIMEOUT,
) -> int:
    wanted = Wait(wait, timeout)
    return run(ctx, lambda api, o: instances.undelete(api, o, instance, tenant, wanted))


@app.command("logs", help="print the instance's server output", epilog=EXIT_CODES)
def logs(
    ctx: typer.Context,
    instance: Ref,
    tenant: LookupTenant = None,
    tail: Annotated[int, typer.Option("--tail", metavar="N", help="last N lines (100)")] = 100,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="keep printing new lines")] = False,
) -> int:
    return run(ctx, lambda api, o: instances.logs(api, o, instance, tenant, tail, follow))
