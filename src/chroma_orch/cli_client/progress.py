"""What ``--wait`` shows on stderr: a line per new phase (``NAME: PHASE``) and, on
a terminal, a live spinner with the phase and the time spent so far."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from chroma_orch.cli_client import render
from chroma_orch.cli_client.follow import Progress as Report


def _quiet(_: str) -> None:
    pass


@contextmanager
def phases(name: str, *, quiet: bool = False) -> Iterator[Report]:
    """A reporter of ``name``'s phases; ``quiet`` (``--json``) shows nothing.

    The live line is transient and drawn only on a terminal; the phase lines are
    what a script or a log file sees."""
    if quiet:
        yield _quiet
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        TimeElapsedColumn(),
        console=render.STDERR,
        transient=True,
    ) as live:
        task = live.add_task(f"{name}: waiting", total=None)

        def report(phase: str) -> None:
            live.console.print(Text(f"{name}: {phase}"))
            live.update(task, description=f"{name}: {phase}")

        yield report
