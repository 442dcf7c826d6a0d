"""Run the service (``chroma-orch serve``) on the ``sim`` runtime with two bench hooks.

``python bench/fleet_serve.py`` is what ``Service.command`` runs for ``bench/fleet.py``.
It raises the soft RLIMIT_NOFILE to the hard limit (one socket per simulated server),
then serves the app behind ``bench.statement_capture.wrap_app`` with two routes the
service does not have, answered before the app sees the request:

- ``GET /__bench/servers``: every simulated server of this process's clouds, the
  latest per instance: ``[instance_id, port, started (CLOCK_MONOTONIC), drawn start
  latency (real seconds), exited]``: what the simulation itself makes a start take.
- ``POST /__bench/crash?count=K``: crash K running servers at random (as the sim's
  crash rate would); answers ``[[instance_id, CLOCK_MONOTONIC of the crash], ...]``.

CLOCK_MONOTONIC is one clock for the machine, so the bench compares these times with
its own.
"""

from __future__ import annotations

import json
import resource
import runpy
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs


def _servers() -> list[list[Any]]:
    from chroma_orch.runtimes.sim import cloud as sim

    return [list(fate) for world in sim._CLOUDS.values() for fate in world.fates()]


def _crash(count: int) -> list[list[Any]]:
    from chroma_orch.runtimes.sim import cloud as sim

    done: list[list[Any]] = []
    for world in sim._CLOUDS.values():
        done += [list(c) for c in world.crash_some(count - len(done))]
    return done


def hooks(app: Any) -> Any:
    async def hooked(scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith("/__bench/"):
            await app(scope, receive, send)
            return
        query = parse_qs(scope.get("query_string", b"").decode())
        if path == "/__bench/crash":
            body = _crash(int(query.get("count", ["1"])[0]))
        else:
            body = _servers()
        payload = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return hooked


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(root), str(root / "src")]
    from bench.statement_capture import wrap_app

    wrap_app(hooks)
    sys.argv = ["chroma-orch", "serve"]
    runpy.run_module("chroma_orch.cli", run_name="__main__")
