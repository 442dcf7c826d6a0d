"""The servers' account is never a shared fallback, nor PostgreSQL's."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from chroma_orch.settings import EmbeddedDatabaseSettings, LocalRuntimeSettings, Settings
from chroma_orch.system_user import SystemUserError, resolve_system_user


def test_an_account_that_cannot_be_created_is_an_error_not_nobody(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no useradd to be found
    name = f"co-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(SystemUserError, match="cannot be created"):
        resolve_system_user(name, fallback=None)
    if os.geteuid() == 0:  # PostgreSQL's account still falls back, as before
        assert resolve_system_user(name).name == "nobody"


def test_servers_and_postgres_never_share_an_account(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="must differ"):
        Settings(
            data_dir=tmp_path,
            local=LocalRuntimeSettings(system_user="shared"),
            embedded_db=EmbeddedDatabaseSettings(system_user="shared"),
        )
