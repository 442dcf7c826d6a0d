"""S3Store against moto's S3 in server mode (real HTTP), and against a server that
only fails, and a port nobody listens on."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aioboto3
import pytest
from aiobotocore.config import AioConfig

from chroma_orch.snapshots.s3_store import MIN_PART_SIZE, S3Store
from chroma_orch.snapshots.store import StoreObjectMissingError, StoreUnavailableError
from tests.snapshots.conftest import REGION
from tests.snapshots.helpers import chunks_of

KEY = "tenant-1/instance-1/snap-1.tar.zst"
ONE_TRY = {"config": AioConfig(retries={"total_max_attempts": 1}), "region_name": REGION}


def store_at(url: str, bucket: str = "b") -> S3Store:
    return S3Store(bucket, "snapshots/", endpoint_url=url, client_kwargs=ONE_TRY)


async def read_all(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


async def uploads_and_keys(url: str, bucket: str) -> tuple[list[object], list[str]]:
    async with aioboto3.Session(region_name=REGION).client("s3", endpoint_url=url) as s3:
        uploads = (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", [])
        listed = (await s3.list_objects_v2(Bucket=bucket)).get("Contents", [])
    return uploads, [o["Key"] for o in listed]


@pytest.mark.parametrize("size", [1000, 2 * MIN_PART_SIZE + 12345])
async def test_put_get_delete(moto_url: str, bucket: str, size: int) -> None:
    store = store_at(moto_url, bucket)
    data = os.urandom(size)
    stored = await store.put(KEY, chunks_of(data, 1024 * 1024))
    assert (stored.size, stored.sha256) == (size, hashlib.sha256(data).hexdigest())
    assert await store.exists(KEY)
    assert await read_all(store.get(KEY)) == data
    assert await uploads_and_keys(moto_url, bucket) == ([], ["snapshots/" + KEY])
    await store.delete(KEY)
    await store.delete(KEY)  # idempotent
    assert not await store.exists(KEY)
    with pytest.raises(StoreObjectMissingError):
        await read_all(store.get(KEY))


async def test_a_failed_upload_is_aborted_and_nothing_appears(moto_url: str, bucket: str) -> None:
    store = store_at(moto_url, bucket)

    async def failing() -> AsyncIterator[bytes]:
        async for chunk in chunks_of(os.urandom(MIN_PART_SIZE + 1), 1024 * 1024):
            yield chunk  # one whole part goes up first
        raise ConnectionError("packing failed")

    with pytest.raises(ConnectionError):
        await store.put(KEY, failing())
    assert await uploads_and_keys(moto_url, bucket) == ([], [])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def failing_s3() -> Iterator[str]:
    """An HTTP server that answers everything with S3's 503 SlowDown."""

    class SlowDown(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            # The body is not read (a PUT may wait for 100-continue); the connection closes.
            body = b"<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>"
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.close_connection = True

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowDown)
    # serve_forever looks for shutdown() every poll_interval (0.5 s by default).
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.usefixtures("aws_credentials")
@pytest.mark.parametrize("where", ["unreachable", "throttling"])
async def test_transient_failures_are_store_unavailable(failing_s3: str, where: str) -> None:
    url = f"http://127.0.0.1:{free_port()}" if where == "unreachable" else failing_s3
    store = store_at(url)
    with pytest.raises(StoreUnavailableError):
        await store.put(KEY, chunks_of(b"archive"))
    with pytest.raises(StoreUnavailableError):
        await read_all(store.get(KEY))
    with pytest.raises(StoreUnavailableError):
        await store.delete(KEY)
    with pytest.raises(StoreUnavailableError):
        await store.exists(KEY)


def test_parts_are_at_least_five_mib() -> None:
    with pytest.raises(ValueError, match="part_size"):
        S3Store("b", part_size=MIN_PART_SIZE - 1)
