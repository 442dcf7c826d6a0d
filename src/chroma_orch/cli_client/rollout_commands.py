"""The command line of ``chroma-orch upgrades create``, ``restarts create`` and
``rollouts ls|show|pause|resume|cancel`` (admin); ``rollouts`` does the work."""

from __future__ import annotations

from typing import Annotated

import typer

from chroma_orch.cli_client import rollouts
from chroma_orch.cli_client.exits import EXIT_CODES
from chroma_orch.cli_client.options import WAIT_TIMEOUT, Timeout, Wait, wait_flag
from chroma_orch.cli_client.runner import run

upgrades = typer.Typer(help="upgrade many instances to a Chroma version, in waves (admin)")
restarts = typer.Typer(help="restart many instances, in waves (admin)")
app = typer.Typer(help="follow and steer upgrades and restarts in waves (admin)")

Tenants = Annotated[
    list[str] | None,
    typer.Option("--tenant", metavar="TENANT", help="only this tenant's (repeatable; id or name)"),
]
Labels = Annotated[
    list[str] | None,
    typer.Option(
        "--label",
        metavar="KEY=VALUE",
        help="only instances with this label (all must match; repeatable)",
    ),
]
FromVersions = Annotated[
    list[str] | None,
    typer.Option(
        "--from-version", metavar="V", help="only instances on this Chroma version (repeatable)"
    ),
]
Waves = Annotated[
    str | None,
    typer.Option(
        "--waves", metavar="P,P,100", help="cumulative percentages (default 100: one wave)"
    ),
]
Pause = Annotated[int | None, typer.Option("--pause", min=0, help="seconds between waves")]
Budget = Annotated[
    int | None,
    typer.Option(
        "--error-budget",
        min=0,
        help="failures (or rollbacks) a wave may have before the rollout halts",
    ),
]
Concurrent = Annotated[
    int | None, typer.Option("--max-concurrent", min=1, help="members at once (default 1)")
]
WaitFlag = Annotated[
    bool, wait_flag("the rollout succeeded (exit 0), halted or was cancelled (exit 1)")
]
RolloutId = Annotated[str, typer.Argument(metavar="ROLLOUT_ID", help="rollout id")]


def _plan(
    tenant: list[str] | None,
    label: list[str] | None,
    from_version: list[str] | None,
    waves: str | None,
    pause: int | None,
    error_budget: int | None,
    max_concurrent: int | None,
) -> rollouts.Plan:
    return rollouts.Plan(
        tenant or [], label or [], from_version or [], waves, pause, error_budget, max_concurrent
    )


@upgrades.command("create", help="upgrade the selected instances, wave by wave", epilog=EXIT_CODES)
def create_upgrade(
    ctx: typer.Context,
    version: Annotated[
        str, typer.Option("--version", metavar="V", help="the Chroma version to upgrade to")
    ],
    tenant: Tenants = None,
    label: Labels = None,
    from_version: FromVersions = None,
    waves: Waves = None,
    pause: Pause = None,
    error_budget: Budget = None,
    max_concurrent: Concurrent = None,
    wait: WaitFlag = False,
    timeout: Timeout = WAIT_TIMEOUT,
) -> int:
    plan = _plan(tenant, label, from_version, waves, pause, error_budget, max_concurrent)
    wanted = Wait(wait, timeout)
    return run(ctx, lambda api, o: rollouts.create(api, o, "upgrade", plan, version, wanted))


@restarts.command("create", help="restart the selected instances, wave by wave", epilog=EXIT_CODES)
def create_restart(
    ctx: typer.Context,
    tenant: Tenants = None,
    label: Labels = None,
    from_version: FromVersions = None,
    waves: Waves = None,
    pause: Pause = None,
    error_budget: Budget = None,
    max_concurrent: Concurrent = None,
    wait: WaitFlag = False,
    timeout: Timeout = WAIT_TIMEOUT,
) -> int:
    plan = _plan(tenant, label, from_version, waves, pause, error_budget, max_concurrent)
    wanted = Wait(wait, timeout)
    return run(ctx, lambda api, o: rollouts.create(api, o, "restart", plan, None, wanted))


@app.command("ls", help="list rollouts, newest first", epilog=EXIT_CODES)
def ls(
    ctx: typer.Context,
    state: Annotated[
        str | None, typer.Option("--state", help="only rollouts in this state")
    ] = None,
) -> int:
    return run(ctx, lambda api, o: rollouts.ls(api, o, state))


@app.command("show", help="a rollout and its waves", epilog=EXIT_CODES)
def show(ctx: typer.Context, rollout_id: RolloutId) -> int:
    return run(ctx, lambda api, o: rollouts.show(api, o, rollout_id))


def _action(name: str, help_: str) -> None:
    @app.command(name, help=help_, epilog=EXIT_CODES)
    def command(ctx: typer.Context, rollout_id: RolloutId) -> int:
        return run(ctx, lambda api, o: rollouts.act(api, o, rollout_id, name))


_action("pause", "pause a rollout (members under way finish; no new ones start)")
_action("resume", "resume a paused rollout")
_action("cancel", "cancel a rollout (members not started yet are skipped)")
