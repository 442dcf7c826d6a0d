"""``S3Store``: snapshot archives as S3 objects, uploaded in streamed multipart parts."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aioboto3
from aiohttp import ClientError as HttpClientError
from botocore.exceptions import BotoCoreError, ClientError

from chroma_orch.snapshots.store import (
    CHUNK,
    Digest,
    StoredObject,
    StoreObjectMissingError,
    StoreUnavailableError,
    validate_key,
)

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum for every part but the last
_THROTTLING = {
    "Throttling",
    "ThrottlingException",
    "SlowDown",
    "RequestLimitExceeded",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "ServiceUnavailable",
    "InternalError",
}
_MISSING = {"NoSuchKey", "404", "NotFound"}


@contextlib.contextmanager
def _mapped(key: str) -> Iterator[None]:
    """S3's failures as the store's: transient ones as ``StoreUnavailableError``, a
    missing object as ``StoreObjectMissingError``; others (denied, no bucket) as they are."""
    try:
        yield
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _MISSING:
            raise StoreObjectMissingError(f"no snapshot archive {key!r}") from error
        if status >= 500 or code in _THROTTLING:
            raise StoreUnavailableError(f"S3 is unavailable ({code or status})") from error
        raise
    except (BotoCoreError, HttpClientError) as error:  # not OSError: the chunks' own
        raise StoreUnavailableError(f"S3 cannot be reached: {error}") from error


class S3Store:
    """Archives in ``bucket`` under ``prefix``. ``put`` streams parts of ``part_size``
    bytes (at least 5 MiB, one part in memory) through a multipart upload, completed
    only at the end (the object appears whole or not at all) and aborted on any
    failure or cancellation; an archive smaller than one part is a single PutObject.
    ``session``/``client_kwargs`` choose credentials, region, endpoint and retries."""

    name = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        session: aioboto3.Session | None = None,
        endpoint_url: str | None = None,
        part_size: int = 8 * 1024 * 1024,
        client_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.part_size = part_size
        self._session = session or aioboto3.Session()
        self._client_kwargs = {"endpoint_url": endpoint_url, **(client_kwargs or {})}

    def object_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _client(self) -> Any:
        return self._session.client("s3", **self._client_kwargs)

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> StoredObject:
        name, digest = self.object_key(key), Digest()
        with _mapped(key):
            async with self._client() as s3:
                first = await _next_part(chunks, self.part_size, digest)
                if len(first) < self.part_size:
                    await s3.put_object(Bucket=self.bucket, Key=name, Body=bytes(first))
                    return digest.stored()
                upload = await s3.create_multipart_upload(Bucket=self.bucket, Key=name)
                upload_id = upload["UploadId"]
                try:
                    parts = await self._upload_parts(s3, name, upload_id, first, chunks, digest)
                    await s3.complete_multipart_upload(
                        Bucket=self.bucket,
                        Key=name,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": parts},
                    )
                except BaseException:
                    with contextlib.suppress(Exception):
                        await s3.abort_multipart_upload(
                            Bucket=self.bucket, Key=name, UploadId=upload_id
                        )
                    raise
        return digest.stored()

    async def _upload_parts(
        self,
        s3: Any,
        name: str,
        upload_id: str,
        part: bytearray,
        chunks: AsyncIterator[bytes],
        digest: Digest,
    ) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        while part:
            number = len(parts) + 1
            answer = await s3.upload_part(
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
                PartNumber=number,
                Body=bytes(part),
            )
            parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            part = await _next_part(chunks, self.part_size, digest)
        return parts

    async def get(self, key: str) -> AsyncIterator[bytes]:
        name = self.object_key(key)
        with _mapped(key):
            async with self._client() as s3:
                answer = await s3.get_object(Bucket=self.bucket, Key=name)
                body = answer["Body"]  # its ``async with`` gives the bare HTTP response
                async with body:
                    async for chunk in body.iter_chunks(CHUNK):
                        yield chunk

    async def delete(self, key: str) -> None:
        name = self.object_key(key)
        with _mapped(key):
            async with self._client() as s3:
                await s3.delete_object(Bucket=self.bucket, Key=name)

    async def exists(self, key: str) -> bool:
        name = self.object_key(key)
        try:
            with _mapped(key):
                async with self._client() as s3:
                    await s3.head_object(Bucket=self.bucket, Key=name)
        except StoreObjectMissingError:
            return False
        return True


async def _next_part(chunks: AsyncIterator[bytes], size: int, digest: Digest) -> bytearray:
    """Up to ``size`` bytes (more by less than a chunk) from ``chunks``; empty at the end."""
    part = bytearray()
    while len(part) < size:
        chunk = await anext(chunks, None)
        if chunk is None:
            break
        digest.update(chunk)
        part += chunk
    return part
