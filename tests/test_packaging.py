"""The Alembic scripts are kept in the top-level migrations/ and ship inside the package:
the wheel built from what the Dockerfile's build stage copies holds every one of them, and
the installed ``chroma-orch migrate`` migrates a database with them, no checkout in reach."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from asyncio.subprocess import PIPE, STDOUT
from pathlib import Path
from zipfile import ZipFile

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from chroma_orch.db.migrate import alembic_config
from chroma_orch.db.session import create_engine

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = ROOT / "migrations"
SKIP = shutil.ignore_patterns("__pycache__", "*.egg-info")

# End to end: pip builds the wheel and installs it, and the installed `chroma-orch`
# runs as a child process (about 7 s of the fast tier's time, none of it unit or db).
pytestmark = pytest.mark.e2e


def _copy_build_context(context: Path) -> None:
    """Copy what the Dockerfile's first (build) stage copies, as ``COPY`` would."""
    build_stage = (ROOT / "Dockerfile").read_text().split("\nFROM ")[1]
    for line in re.findall(r"^COPY (?!--from)(.+)$", build_stage, re.MULTILINE):
        *sources, target = line.split()
        for source in sources:
            into = context / target
            if target.endswith("/"):
                into = into / Path(source).name
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, into, ignore=SKIP)
            else:
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, into)


def _pip(*args: str | Path) -> None:
    """pip, offline: the build backend is the one installed here (dev extras)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *map(str, args)],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    _copy_build_context(root / "context")
    _pip("wheel", "--no-deps", "--no-index", "--no-build-isolation", "-w", root, root / "context")
    (built,) = root.glob("chroma_orch-*.whl")
    return built


def test_wheel_holds_every_migration_of_the_top_level_folder(wheel: Path) -> None:
    kept = {
        f"chroma_orch/migrations/{path.relative_to(MIGRATIONS).as_posix()}"
        for path in MIGRATIONS.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert "chroma_orch/migrations/env.py" in kept
    assert "chroma_orch/migrations/script.py.mako" in kept
    assert len([name for name in kept if "/versions/" in name]) >= 8
    with ZipFile(wheel) as archive:
        shipped = {n for n in archive.namelist() if n.startswith("chroma_orch/migrations/")}
    assert shipped == kept


async def _run(*args: str | Path, env: dict[str, str], cwd: Path) -> str:
    process = await asyncio.create_subprocess_exec(
        *args, env=env, cwd=cwd, stdout=PIPE, stderr=STDOUT
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    return output.decode()


def _downgrade_to_base(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, "base")


async def test_installed_service_migrates_with_its_packaged_scripts(
    wheel: Path, database_url: str, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    _pip("install", "--no-deps", "--no-index", "--target", site, wheel)
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_downgrade_to_base)
        # Only the installed copy on the path: nothing of this checkout is importable.
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(site)}
        env["CHROMA_ORCH_DATABASE_URL"] = database_url
        where = await _run(
            sys.executable,
            "-c",
            "import chroma_orch.db.migrate as m; print(m.__file__)",
            env=env,
            cwd=tmp_path,
        )
        assert Path(where.strip()).is_relative_to(site)
        await _run(site / "bin" / "chroma-orch", "migrate", env=env, cwd=tmp_path)
        async with engine.connect() as conn:
            version = await conn.exec_driver_sql("SELECT version_num FROM alembic_version")
            assert version.scalar() == ScriptDirectory(str(MIGRATIONS)).get_current_head()
    finally:
        await engine.dispose()
