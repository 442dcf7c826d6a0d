"""Fixtures for the snapshot store tests: moto's S3 (server mode) and a bucket in it."""

from __future__ import annotations

import uuid
from pathlib import Path

import aioboto3
import pytest

from tests.moto_server import REGION as REGION
from tests.moto_server import fake_aws_credentials, run_moto_server

moto_url = pytest.fixture(scope="session", name="moto_url")(run_moto_server)


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_aws_credentials(monkeypatch, tmp_path)


@pytest.fixture
async def bucket(moto_url: str, aws_credentials: None) -> str:
    """A fresh bucket in moto's S3."""
    name = f"snapshots-{uuid.uuid4().hex[:12]}"
    async with aioboto3.Session(region_name=REGION).client("s3", endpoint_url=moto_url) as s3:
        await s3.create_bucket(Bucket=name)
    return name
