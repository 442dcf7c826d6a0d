"""An ECS deployment without EBS volumes (storage=ephemeral or efs) has no volume
snapshots: a snapshot is refused with 409 ``snapshots_unsupported``, saying what
would work, the instance keeps running, and a delete takes no pre_delete snapshot."""

from __future__ import annotations

import pytest

from chroma_orch.runtimes.base import native_snapshots
from chroma_orch.runtimes.ecs.runtime import EcsRuntime
from chroma_orch.settings import EcsSettings
from tests.ecs.conftest import EcsService
from tests.ecs.test_ecs_ebs import _running_instance


@pytest.fixture
def ecs_settings(ecs_settings: EcsSettings) -> EcsSettings:
    return ecs_settings.model_copy(update={"storage": "ephemeral"})


async def test_a_snapshot_without_ebs_is_refused_and_delete_takes_none(
    ecs_service: EcsService,
) -> None:
    """Refused up front (409 snapshots_unsupported, nothing written) rather than
    accepted to fail Unsupported; a delete takes no pre_delete snapshot."""
    http = ecs_service.http
    instance_id, _ = await _running_instance(ecs_service)
    asked = await http.post(f"/v1/instances/{instance_id}/snapshots")
    assert asked.status_code == 409, asked.text
    problem = asked.json()
    assert problem["code"] == "snapshots_unsupported"
    assert "'ecs' runtime" in problem["detail"]
    assert "STORAGE=ebs" in problem["detail"]
    assert (await http.get(f"/v1/instances/{instance_id}")).json()["phase"] == "running"
    deleted = await http.delete(f"/v1/instances/{instance_id}")
    assert deleted.status_code == 202, deleted.text
    listed = await http.get(f"/v1/instances/{instance_id}/snapshots")
    assert listed.json()["items"] == []


def test_only_ebs_storage_offers_native_snapshots() -> None:
    role = "arn:aws:iam::123456789012:role/infra"
    assert native_snapshots(EcsRuntime(EcsSettings(ebs_role_arn=role))) is not None
    assert native_snapshots(EcsRuntime(EcsSettings(efs_file_system_id="fs-1"))) is None
    assert native_snapshots(EcsRuntime(EcsSettings(storage="ephemeral"))) is None
