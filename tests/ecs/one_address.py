"""A test layer over moto: every task ECS describes has one private IP, as if ECS
gave a stopped task's address to the next task at once (AWS releases a task's ENI
and its private IP when the task stops, "Fargate task networking"). Used by the
address-reuse tests and by the liveness tests that put a stand-in server there."""

from __future__ import annotations

from typing import Any

from chroma_orch.runtimes.ecs.runtime import EcsRuntime

SHARED_IP = "127.0.0.1"
QUARANTINE = 10.0  # the least the settings accept: route cache 2 s + Nginx's 5 + 2 s + 1 s


class OneAddressEcs:
    """The test layer: every task ECS describes has the same private IP."""

    def attach(self, runtime: EcsRuntime) -> None:
        def hook(service: str, client: Any) -> None:
            if service == "ecs":
                client.meta.events.register("after-call.ecs", self._rewrite)

        runtime.api.on_client(hook)

    @staticmethod
    def _rewrite(parsed: dict[str, Any], **_: Any) -> None:
        for task in parsed.get("tasks") or []:
            for attachment in task.get("attachments") or []:
                for detail in attachment.get("details") or []:
                    if detail.get("name") == "privateIPv4Address":
                        detail["value"] = SHARED_IP
