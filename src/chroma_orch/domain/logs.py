"""Reading an instance's server output through its runtime."""

from __future__ import annotations

import uuid

from chroma_orch.domain.instances import InstanceService
from chroma_orch.domain.schemas import InstanceLogs
from chroma_orch.runtimes.base import Runtime


async def read_logs(
    instances: InstanceService, runtime: Runtime, instance_id: uuid.UUID, tail: int
) -> InstanceLogs:
    instance = await instances.get(instance_id)
    lines = await runtime.logs(str(instance.id), instance.handle or instance.last_handle, tail)
    return InstanceLogs(instance_id=instance.id, lines=lines)
