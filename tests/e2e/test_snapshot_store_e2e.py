"""The service's snapshot stores for real: S3 (moto's server) chosen by settings, and
either store unavailable: retries counted, then ``failed`` with StoreUnavailable, the
instance running with its data; a later snapshot works once the store is back."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aioboto3
import pytest
from moto.server import ThreadedMotoServer

from tests.e2e.service import Service, free_port, running_instance, running_service
from tests.e2e.snapshot_faults import (
    add,
    contents,
    request_snapshot,
    restore,
    restore_failed,
    settled,
    snapshot_row,
    start_again,
)
from tests.helpers import wait_phase

REGION = "eu-west-1"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}
ATTEMPTS = 3


class Moto:
    """moto's server of one test on a fixed port, so it can be stopped and started again
    (its state lives in this process and outlives a stop)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: ThreadedMotoServer | None = None

    def start(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Moto]:
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    server = Moto()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def s3_service(
    moto: Moto, database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Service, str]]:
    """The service with the S3 store: bucket and endpoint from settings, credentials and
    region from the environment (as on AWS)."""
    bucket = f"snapshots-{uuid.uuid4().hex[:12]}"
    session = aioboto3.Session(region_name=REGION)
    async with session.client("s3", endpoint_url=moto.url) as s3:
        await s3.create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
    async with running_service(
        database_url,
        tmp_path / "data",
        CHROMA_ORCH_SNAPSHOTS__STORE="s3",
        CHROMA_ORCH_SNAPSHOTS__S3_BUCKET=bucket,
        CHROMA_ORCH_SNAPSHOTS__S3_ENDPOINT_URL=moto.url,
        CHROMA_ORCH_SNAPSHOTS__ATTEMPTS=str(ATTEMPTS),
    ) as service:
        yield service, bucket


async def _objects(moto: Moto, bucket: str) -> list[str]:
    async with aioboto3.Session(region_name=REGION).client("s3", endpoint_url=moto.url) as s3:
        listed = await s3.list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in listed.get("Contents", [])]


async def test_s3_store_snapshot_and_restore(s3_service: tuple[Service, str], moto: Moto) -> None:
    service, bucket = s3_service
    token, instance_id = await running_instance(service)
    await add(service, instance_id, token, ["a", "b"])
    async with service.client(token) as http:
        snapshot = await settled(http, await request_snapshot(http, instance_id))
        assert snapshot["phase"] == "ready", snapshot
        assert snapshot["store"] == "s3"
        (key,) = await _objects(moto, bucket)
        prefix = f"chroma-orch/{snapshot['tenant_id']}/{instance_id}/{snapshot['id']}."
        assert key.startswith(prefix), key
        assert key.endswith(".tar.zst"), key
        await wait_phase(http, instance_id, "running")
        await add(service, instance_id, token, ["c"])
        await restore(http, instance_id, snapshot["id"])
        await wait_phase(http, instance_id, "running", timeout=90)
    assert await contents(service, instance_id, token) == ({"a", "b"}, "b")


async def _unavailable_then_back(
    service: Service, database_url: str, down: Callable[[], None], back: Callable[[], None]
) -> None:
    token, instance_id = await running_instance(service)
    await add(service, instance_id, token, ["a", "b"])
    async with service.client(token) as http:
        down()
        failed = await settled(http, await request_snapshot(http, instance_id))
        assert failed["phase"] == "failed", failed
        assert failed["failure"]["reason"] == "StoreUnavailable", failed
        assert (await snapshot_row(database_url, failed["id"]))["attempts"] == ATTEMPTS
        running = await wait_phase(http, instance_id, "running")
        assert running["phase"] == "running"
        assert await contents(service, instance_id, token) == ({"a", "b"}, "b")
        back()
        later = await settled(http, await request_snapshot(http, instance_id))
        assert later["phase"] == "ready", later
        await wait_phase(http, instance_id, "running")
    assert await contents(service, instance_id, token) == ({"a", "b"}, "b")


async def test_s3_down_fails_the_snapshot_and_keeps_the_instance(
    s3_service: tuple[Service, str], moto: Moto, database_url: str
) -> None:
    await _unavailable_then_back(s3_service[0], database_url, moto.stop, moto.start)


async def test_unwritable_directory_store_fails_the_snapshot_and_keeps_the_instance(
    database_url: str, tmp_path: Path
) -> None:
    blocker = tmp_path / "blocker"  # a file where the store's directory should be: even
    blocker.write_text("not a directory")  # root cannot write under it

    def back() -> None:
        blocker.unlink()
        blocker.mkdir()

    async with running_service(
        database_url,
        tmp_path / "data",
        CHROMA_ORCH_SNAPSHOTS__DIR=str(blocker / "store"),
        CHROMA_ORCH_SNAPSHOTS__ATTEMPTS=str(ATTEMPTS),
    ) as service:
        await _unavailable_then_back(service, database_url, lambda: None, back)
    shutil.rmtree(blocker, ignore_errors=True)


async def test_s3_down_during_a_restore_fails_it_and_keeps_the_data(
    s3_service: tuple[Service, str], moto: Moto
) -> None:
    service = s3_service[0]
    token, instance_id = await running_instance(service)
    await add(service, instance_id, token, ["a", "b"])
    async with service.client(token) as http:
        snapshot = await settled(http, await request_snapshot(http, instance_id))
        assert snapshot["phase"] == "ready", snapshot
        await wait_phase(http, instance_id, "running")
        await add(service, instance_id, token, ["c"])
        moto.stop()
        await restore(http, instance_id, snapshot["id"])
        failed = await restore_failed(http, instance_id)
        # the data it would replace could not be kept first: it is not replaced
        assert failed["failure"]["reason"] == "PreRestoreSnapshotFailed", failed
        moto.start()
        await start_again(http, instance_id)
    assert await contents(service, instance_id, token) == ({"a", "b", "c"}, "b")
