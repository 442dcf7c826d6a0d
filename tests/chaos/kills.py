"""What the ``kill -9`` tests share: a data directory whose leftover servers are
killed, an instance padded so that copying it takes a while, and a service restarted
in place of one killed."""

from __future__ import annotations

import os
from pathlib import Path

from tests.e2e.service import Service

FILLER = 160 * 1024 * 1024  # incompressible: copying and packing it take a while


def pad(data_dir: Path, instance_id: str, size: int = FILLER) -> None:
    """Make the instance big-ish: a file Chroma ignores in its persist directory."""
    with (data_dir / "instances" / instance_id / "filler.bin").open("wb") as file:
        for _ in range(size // (16 * 1024 * 1024)):
            file.write(os.urandom(16 * 1024 * 1024))


async def restarted(first: Service, *keep: str) -> Service:
    """``first`` killed (``kill -9``) if it still runs, and a new service started on
    its database and data directory, with ``first``'s port range and the variables
    named in ``keep``."""
    if first.process is not None and first.process.returncode is None:
        await first.kill9()
    names = ("CHROMA_ORCH_LOCAL__PORT_RANGE", *keep)
    second = Service(
        first.env["CHROMA_ORCH_DATABASE_URL"],
        first.data_dir,
        **{name: first.env[name] for name in names},
    )
    await second.start()
    return second
