"""Run the service (``chroma-orch serve``) with its PostgreSQL statements recorded.

``python bench/statement_capture.py`` is what ``Service.command`` runs when a
benchmark wants to know which statements each request sends (``bench/api_load.py``
replays them as its floor). asyncpg is wrapped below the service, at its client
calls (``Connection.execute``/``_execute``/``_executemany`` and
``PreparedStatement.fetch``, which is what SQLAlchemy's asyncpg dialect uses), so
both SQLAlchemy's statements and the ones the service sends straight to asyncpg
are seen, with BEGIN/COMMIT, bound parameters and the rows that came back.

Only requests carrying the header ``x-bench-op: <name>`` are recorded (the
reconciler's and other background statements are not), each statement as one
pickled ``Captured`` appended to ``$CO_BENCH_CAPTURE``.
"""

from __future__ import annotations

import contextvars
import os
import pickle
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from asyncpg import connection as _connection
from asyncpg import prepared_stmt as _prepared

OP: contextvars.ContextVar[str | None] = contextvars.ContextVar("bench_op", default=None)
HEADER = b"x-bench-op"


@dataclass(frozen=True)
class Captured:
    """One statement a tagged request sent: its text, bound arguments, rows back."""

    op: str
    kind: str  # "simple" (no arguments, simple protocol), "bind" or "many" (executemany)
    query: str
    args: tuple[Any, ...]
    rows: list[dict[str, Any]]


def _rows(result: Any) -> list[dict[str, Any]]:
    if isinstance(result, tuple):  # (records, status, completed) from _execute
        result = result[0]
    if isinstance(result, list):
        return [dict(r) for r in result if isinstance(r, asyncpg.Record)]
    return []


def _record(kind: str, query: str, args: Any, result: Any) -> None:
    op = OP.get()
    if op is None:
        return
    item = Captured(op, kind, query, tuple(args), _rows(result))
    with open(os.environ["CO_BENCH_CAPTURE"], "ab") as out:  # noqa: ASYNC230,PTH123 (capture only)
        pickle.dump(item, out)


def install() -> None:
    execute = _connection.Connection.execute
    inner = _connection.Connection._execute
    many = _connection.Connection._executemany
    fetch = _prepared.PreparedStatement.fetch

    async def execute_(self: Any, query: str, *args: Any, **kw: Any) -> Any:
        result = await execute(self, query, *args, **kw)
        if not args:  # the simple protocol (BEGIN, COMMIT...); with args: _execute
            _record("simple", query, (), None)
        return result

    async def inner_(self: Any, query: str, args: Any, *rest: Any, **kw: Any) -> Any:
        result = await inner(self, query, args, *rest, **kw)
        _record("bind", query, args, result)
        return result

    async def many_(self: Any, query: str, args: Any, *rest: Any, **kw: Any) -> Any:
        result = await many(self, query, args, *rest, **kw)
        _record("many", query, [tuple(a) for a in args], None)
        return result

    async def fetch_(self: Any, *args: Any, **kw: Any) -> Any:
        result = await fetch(self, *args, **kw)
        _record("bind", self.get_query(), args, result)
        return result

    _connection.Connection.execute = execute_
    _connection.Connection._execute = inner_
    _connection.Connection._executemany = many_
    _prepared.PreparedStatement.fetch = fetch_
    _tag_requests()


def wrap_app(wrapper: Any) -> None:
    """Make uvicorn serve ``wrapper(app)`` instead of the service's ASGI ``app``."""
    import uvicorn.config

    load = uvicorn.config.Config.load

    def load_(self: Any) -> None:
        load(self)
        self.loaded_app = wrapper(self.loaded_app)

    uvicorn.config.Config.load = load_  # type: ignore[method-assign]


def _tag_requests() -> None:
    """Wrap the ASGI app uvicorn loads so a request's ``x-bench-op`` header tags it."""

    def tagging(app: Any) -> Any:
        async def tagged(scope: Any, receive: Any, send: Any) -> None:
            headers = dict(scope.get("headers") or ())
            op = headers.get(HEADER)
            token = OP.set(op.decode() if op else None)
            try:
                await app(scope, receive, send)
            finally:
                OP.reset(token)

        return tagged

    wrap_app(tagging)


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(root), str(root / "src")]
    from bench import statement_capture  # pickles name bench.statement_capture.Captured

    statement_capture.install()
    sys.argv = ["chroma-orch", "serve"]
    runpy.run_module("chroma_orch.cli", run_name="__main__")
