"""Reading an instance's server output through its runtime."""

from __future__ import annotations

import uuid

from chroma_orch.db.models import Instance
from chroma_orch.domain.instances import InstanceService
from chroma_orch.domain.schemas import InstanceLogs
from chroma_orch.runtimes.base import Handle, Runtime


def log_handle(instance: Instance) -> Handle | None:
    """The handle whose server's output to read: the live one, else the last one."""
    return Handle.load(instance.handle or instance.last_handle)


async def read_logs(
    instances: InstanceService, runtime: Runtime, instance_id: uuid.UUID, tail: int
) -> InstanceLogs:
    instance = await instances.get(instance_id)
    lines = await runtime.logs(str(instance.id), log_handle(instance), tail)
    return InstanceLogs(instance_id=instance.id, lines=lines)
