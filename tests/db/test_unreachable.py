"""database_unreachable: what a failed or lost PostgreSQL connection raises counts,
other errors do not (they stay 500s)."""

from __future__ import annotations

import socket
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import create_async_engine

from chroma_orch.db.unreachable import database_unreachable
from tests.e2e.service import free_port


async def _connect_error(url: str) -> BaseException:
    engine = create_async_engine(url, pool_pre_ping=True)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("select 1"))
    except Exception as exc:
        return exc
    finally:
        await engine.dispose()
    raise AssertionError(f"connected to {url}")


async def test_nothing_listening_on_the_port(tmp_path: Path) -> None:
    exc = await _connect_error(f"postgresql+asyncpg://u@127.0.0.1:{free_port()}/db")
    assert database_unreachable(exc), repr(exc)


async def test_no_unix_socket_in_the_directory(tmp_path: Path) -> None:
    exc = await _connect_error(f"postgresql+asyncpg://u@/db?host={tmp_path}")
    assert database_unreachable(exc), repr(exc)


async def test_a_stale_unix_socket(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(tmp_path / ".s.PGSQL.5432"))
    exc = await _connect_error(f"postgresql+asyncpg://u@/db?host={tmp_path}")
    assert database_unreachable(exc), repr(exc)


@pytest.mark.parametrize(
    "exc",
    [
        socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        OperationalError("select 1", {}, ConnectionResetError(), connection_invalidated=True),
    ],
)
def test_connection_failures_count(exc: BaseException) -> None:
    assert database_unreachable(exc)


def test_the_cause_counts() -> None:
    exc = RuntimeError("lookup failed")
    exc.__cause__ = ConnectionRefusedError(111, "Connection refused")
    assert database_unreachable(exc)


@pytest.mark.parametrize(
    "exc",
    [
        FileNotFoundError(2, "No such file or directory", "/srv/data/x.log"),
        PermissionError(13, "Permission denied", "/srv/data"),
        OperationalError("select 1", {}, ValueError(), connection_invalidated=False),
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        ValueError("bad"),
    ],
)
def test_other_errors_do_not(exc: BaseException) -> None:
    assert not database_unreachable(exc)
