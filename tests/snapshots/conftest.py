"""Fixtures for the snapshot store tests: moto's S3 (server mode) and a bucket in it."""

from __future__ import annotations

import uuid
from pathlib import Path

import aioboto3
import pytest

from tests.moto_server import run_moto_server

REGION = "us-east-1"

moto_url = pytest.fixture(scope="session", name="moto_url")(run_moto_server)


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
async def bucket(moto_url: str, aws_credentials: None) -> str:
    """A fresh bucket in moto's S3."""
    name = f"snapshots-{uuid.uuid4().hex[:12]}"
    async with aioboto3.Session(region_name=REGION).client("s3", endpoint_url=moto_url) as s3:
        await s3.create_bucket(Bucket=name)
    return name
