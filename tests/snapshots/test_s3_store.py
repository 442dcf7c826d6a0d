"""``S3Store`` on moto's S3 (server mode): what ``put`` stored, ``get`` streams back."""

from __future__ import annotations

import os

import pytest

from chroma_orch.snapshots.s3_store import MIN_PART_SIZE, S3Store
from chroma_orch.snapshots.store import StoreObjectMissingError
from tests.snapshots.helpers import chunks_of


async def _read(store: S3Store, key: str) -> bytes:
    return b"".join([chunk async for chunk in store.get(key)])


@pytest.mark.parametrize("size", [100_000, MIN_PART_SIZE + 123])  # one PutObject; multipart
async def test_put_then_get_streams_the_same_bytes(moto_url: str, bucket: str, size: int) -> None:
    store = S3Store(bucket, "pre/", endpoint_url=moto_url, part_size=MIN_PART_SIZE)
    data = os.urandom(size)
    stored = await store.put("t/i/s.tar.zst", chunks_of(data))
    assert stored.size == size
    assert await _read(store, "t/i/s.tar.zst") == data
    assert await store.exists("t/i/s.tar.zst")


async def test_get_of_a_missing_key_is_store_object_missing(moto_url: str, bucket: str) -> None:
    store = S3Store(bucket, endpoint_url=moto_url)
    with pytest.raises(StoreObjectMissingError):
        await _read(store, "t/i/none.tar.zst")
