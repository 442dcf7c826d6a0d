"""Arguments of the client commands: ``instances``, ``tenants``, ``tokens``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from chroma_orch.cli_client import admin, instances
from chroma_orch.cli_client.api import DEFAULT_URL

COMMANDS = ("instances", "tenants", "tokens")
WAIT_TIMEOUT = 600.0

EXIT_CODES = """\
exit codes:
  0  success
  1  the instance failed, or --wait timed out (the reason is printed)
  2  usage error, ambiguous name, or a request the service refused as invalid
  3  no token, or the token was refused (401, 403)
  4  not found (404)
  5  conflict: not allowed in the current state, or the name is taken (409)
  6  the service is unreachable or unavailable (connection error, timeout, 502-504)
  7  a quota or rate limit was hit (429)
  8  any other error of the service (500, unexpected answer)
"""


def global_options(parser: argparse.ArgumentParser) -> None:
    """--url, --token-file, --token and --json; accepted before or after the subcommand."""
    s = argparse.SUPPRESS
    parser.add_argument(
        "--url", default=s, help=f"service URL (CHROMA_ORCH_URL, default {DEFAULT_URL})"
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=s,
        metavar="PATH",
        help="read the API token from PATH (or set CHROMA_ORCH_TOKEN)",
    )
    parser.add_argument(
        "--token",
        default=s,
        help="API token; discouraged: other users see it in the process list",
    )
    parser.add_argument(
        "--json", action="store_true", default=s, help="machine-readable JSON on stdout"
    )
    parser.add_argument(
        "--poll",
        action="store_true",
        default=s,
        help="use HTTP polling, not WebSockets, for --wait and --follow "
        "(e.g. behind a proxy without WebSocket support)",
    )


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    global_options(common)
    return common


def _leaf(group: Any, name: str, help_: str, handler: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = group.add_parser(
        name,
        help=help_,
        parents=[_common()],
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=handler)
    return parser


def _wait_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--wait", action="store_true", help=f"show progress until {what}")
    parser.add_argument(
        "--timeout",
        type=float,
        default=WAIT_TIMEOUT,
        help=f"seconds --wait waits (default {WAIT_TIMEOUT:g})",
    )


def _tenant_option(parser: argparse.ArgumentParser, help_: str) -> None:
    parser.add_argument("--tenant", metavar="TENANT", help=help_ + "; an id or a name")


def _instance_ref(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("instance", metavar="ID", help="instance id (or its name, if unique)")
    _tenant_option(parser, "look names up in this tenant only (admin)")


def _instances(sub: Any) -> None:
    group = sub.add_parser("instances", help="launch and manage instances", parents=[_common()])
    cmds = group.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    launch = _leaf(cmds, "launch", "launch a new instance", instances.launch)
    launch.add_argument("name", metavar="NAME", help="instance name (a DNS label)")
    _tenant_option(launch, "owning tenant (required with an admin token)")
    _wait_options(launch, "it is running or failed")
    ls = _leaf(cmds, "ls", "list instances", instances.ls)
    _tenant_option(ls, "only this tenant's instances (admin)")
    _instance_ref(_leaf(cmds, "get", "show one instance", instances.get))
    for action, help_ in (
        ("start", "start a stopped or failed instance"),
        ("stop", "stop an instance (its data is kept)"),
        ("restart", "restart a running instance"),
    ):
        parser = _leaf(cmds, action, help_, instances.act)
        parser.set_defaults(action=action)
        _instance_ref(parser)
        _wait_options(parser, "it is " + ("stopped" if action == "stop" else "running"))
    delete = _leaf(cmds, "delete", "delete an instance and its data", instances.delete)
    _instance_ref(delete)
    delete.add_argument("--keep-data", action="store_true", help="keep the data directory")
    _wait_options(delete, "it is gone")
    logs = _leaf(cmds, "logs", "print the instance's server output", instances.logs)
    _instance_ref(logs)
    logs.add_argument("--tail", type=int, default=100, metavar="N", help="last N lines (100)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")


def _admin(sub: Any) -> None:
    tenants = sub.add_parser("tenants", help="manage tenants (admin)", parents=[_common()])
    cmds = tenants.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    create = _leaf(cmds, "create", "create a tenant", admin.tenants_create)
    create.add_argument("name", metavar="NAME")
    _leaf(cmds, "ls", "list tenants", admin.tenants_ls)
    tokens = sub.add_parser("tokens", help="issue tenant tokens (admin)", parents=[_common()])
    cmds = tokens.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    create = _leaf(cmds, "create", "issue a token; prints the secret once", admin.tokens_create)
    create.add_argument("tenant", metavar="TENANT_ID", help="tenant id (or name)")
    create.add_argument("--name", default="default", help="token name (default 'default')")
    create.add_argument(
        "--expires-in", type=int, metavar="SECONDS", help="lifetime (default: never expires)"
    )


def add_commands(sub: Any) -> None:
    """Add the client commands to the ``chroma-orch`` subparsers."""
    _instances(sub)
    _admin(sub)
