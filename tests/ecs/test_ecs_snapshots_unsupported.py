"""An ECS deployment without EBS volumes (storage=ephemeral or efs) has no volume
snapshots: a snapshot fails at once with reason Unsupported, saying what would
work, and the instance keeps running."""

from __future__ import annotations

import pytest

from chroma_orch.runtimes.base import native_snapshots
from chroma_orch.runtimes.ecs.runtime import EcsRuntime
from chroma_orch.settings import EcsSettings
from tests.ecs.conftest import EcsService
from tests.ecs.test_ecs_ebs import _running_instance
from tests.helpers import wait_for


@pytest.fixture
def ecs_settings(ecs_settings: EcsSettings) -> EcsSettings:
    return ecs_settings.model_copy(update={"storage": "ephemeral"})


async def test_a_snapshot_without_ebs_fails_as_unsupported(ecs_service: EcsService) -> None:
    http = ecs_service.http
    instance_id, _ = await _running_instance(ecs_service)
    asked = await http.post(f"/v1/instances/{instance_id}/snapshots")
    assert asked.status_code == 202, asked.text

    async def failed() -> dict[str, object] | None:
        body: dict[str, object] = (await http.get(f"/v1/snapshots/{asked.json()['id']}")).json()
        return body if body["phase"] == "failed" else None

    snapshot = await wait_for(failed)
    failure = snapshot["failure"]
    assert isinstance(failure, dict)
    assert failure["reason"] == "Unsupported"
    assert "storage=ephemeral" in failure["message"]
    assert "STORAGE=ebs" in failure["message"]
    assert (await http.get(f"/v1/instances/{instance_id}")).json()["phase"] == "running"


def test_only_ebs_storage_offers_native_snapshots() -> None:
    role = "arn:aws:iam::123456789012:role/infra"
    assert native_snapshots(EcsRuntime(EcsSettings(ebs_role_arn=role))) is not None
    assert native_snapshots(EcsRuntime(EcsSettings(efs_file_system_id="fs-1"))) is None
    assert native_snapshots(EcsRuntime(EcsSettings(storage="ephemeral"))) is None
