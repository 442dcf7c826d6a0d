"""The typer side of ``chroma-orch``: the client command groups, and running a
command line the way ``main`` needs: the command's exit code returned, while
``--help`` and usage errors end the process (SystemExit), as argparse's did."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer
from typer.core import TyperGroup

from chroma_orch.cli_client import (
    admin_commands,
    instance_commands,
    plan_commands,
    rollout_commands,
    schedule_commands,
    snapshot_commands,
    transfer,
    upgrade_commands,
)
from chroma_orch.cli_client.options import add_global_options

CLIENT_GROUPS = {
    "instances": instance_commands.app,
    "tenants": admin_commands.tenants,
    "tokens": admin_commands.tokens,
    "snapshots": snapshot_commands.app,
    "upgrades": rollout_commands.upgrades,
    "restarts": rollout_commands.restarts,
    "rollouts": rollout_commands.app,
    "plans": plan_commands.app,
}
snapshot_commands.add_clone(instance_commands.app)
upgrade_commands.add_upgrades(instance_commands.app)
transfer.add_export(snapshot_commands.app)
snapshot_commands.app.add_typer(schedule_commands.app, name="schedule")


class Finished(Exception):
    """A command ran; carries its exit code past typer's own exit handling."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def finished(code: int) -> None:
    """The root app's result callback: every command's return value is its exit code."""
    raise Finished(code)


def add_client_commands(root: typer.Typer) -> None:
    """Add ``instances``, ``tenants``, ``tokens``, ``snapshots`` and ``plans`` to the
    ``chroma-orch`` app."""
    for name, group in CLIENT_GROUPS.items():
        root.add_typer(group, name=name)


def command_of(root: typer.Typer) -> TyperGroup:
    """The click command of ``root``, the global options on it and on every client command."""
    command = typer.main.get_command(root)
    assert isinstance(command, TyperGroup)
    add_global_options(command, recursive=False)
    for name in CLIENT_GROUPS:
        add_global_options(command.commands[name])
    return command


def execute(root: typer.Typer, argv: Sequence[str] | None, prog: str) -> int:
    """Run the command line ``argv`` (default: this process's); the command's exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        command_of(root).main(args=args, prog_name=prog)
    except Finished as done:
        return done.code
    raise SystemExit(0)  # not reached: typer ends every other way with SystemExit itself
