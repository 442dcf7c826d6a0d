"""The snapshot store the settings name (``snapshots.store``)."""

from __future__ import annotations

from chroma_orch.settings import Settings
from chroma_orch.snapshots.local_store import DirectoryStore
from chroma_orch.snapshots.store import SnapshotStore


def build_store(settings: Settings) -> SnapshotStore:
    config = settings.snapshots
    if config.store == "s3":
        assert config.s3_bucket is not None  # Settings checks it
        from chroma_orch.snapshots.s3_store import S3Store  # aioboto3: imported on use

        region = {"region_name": config.s3_region} if config.s3_region else {}
        return S3Store(
            config.s3_bucket,
            config.s3_prefix,
            endpoint_url=config.s3_endpoint_url,
            client_kwargs=region,
        )
    return DirectoryStore(config.directory(settings.data_dir))
