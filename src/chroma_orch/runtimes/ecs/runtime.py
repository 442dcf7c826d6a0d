"""The ``ecs`` runtime: each instance is an AWS ECS Fargate task running Chroma.

- Task definitions are registered once per distinct spec (family = prefix + hash
  of the spec) and reused by every instance with that spec.
- ``RunTask`` carries ``clientToken`` (the start attempt's deterministic token),
  ``startedBy`` (the service name) and tags naming the instance, tenant and
  generation. ECS makes RunTask idempotent on the token, so a retry after a lost
  answer, or the next pass after the service died between RunTask and saving the
  handle, gets the task already launched back; a ``ConflictException`` (same
  token, other parameters, e.g. a changed setting) names that task in
  ``resourceIds`` and it is adopted. No listing precedes a start.
- The ECS API is eventually consistent: within ``VISIBILITY_GRACE`` seconds of
  its RunTask a task DescribeTasks does not know yet is starting, not gone.
- Every lookup goes through one ``TaskLoader`` per cluster, so a liveness pass and
  any number of concurrent single-instance polls cost one ``DescribeTasks`` per
  100 tasks.
- With EFS, an instance's data lives in ``DATA_MOUNT/<instance id>`` (chosen
  through the container command), so stop keeps it and start brings it back;
  delete runs a one-shot task that removes it.

Handle data: ``instance_id``, ``task_arn``, ``cluster``, ``launched_at`` (epoch
seconds, for tasks this service launched).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from aiobotocore.config import AioConfig

from chroma_orch.runtimes.base import (
    INSTANCE_ID,
    AccountRateLimits,
    ExitCallback,
    ExitCause,
    Handle,
    InstanceSpec,
    Observation,
    ObservedState,
    RuntimeUnavailableError,
    StartFailedError,
)
from chroma_orch.runtimes.ecs.api import EcsApi
from chroma_orch.runtimes.ecs.batch import TaskLoader
from chroma_orch.runtimes.ecs.heartbeat import HeartbeatGate
from chroma_orch.runtimes.ecs.logs import TaskLogs
from chroma_orch.runtimes.ecs.owned import OwnedTask, OwnedTasks
from chroma_orch.runtimes.ecs.settings import EcsSettings
from chroma_orch.runtimes.ecs.stops import classify_run_failures, classify_run_rejection
from chroma_orch.runtimes.ecs.tasks import (
    CLEANUP_CONTAINER,
    INVISIBLE,
    cleanup_definition,
    client_token,
    data_path,
    instance_tags,
    is_live,
    make_handle,
    network_configuration,
    not_visible_yet,
    observe_task,
    server_command,
    server_definition,
)
from chroma_orch.runtimes.ecs.throttle import error_code, is_throttle, is_transient

log = logging.getLogger(__name__)

_REJECTED = frozenset({"ClientException", "InvalidParameterException", "AccessDeniedException"})
_VISIBLE_FIRST_DELAY = 0.25
_VISIBLE_MAX_DELAY = 5.0
_VISIBLE_MAX_WAIT = 15.0
"""wait_ready's backoff on DescribeTasks for a task not visible yet (seconds)."""


class EcsRuntime:
    """Chroma servers as ECS Fargate tasks (see the module docstring)."""

    name = "ecs"
    allocates_ports = False

    def __init__(
        self,
        settings: EcsSettings,
        *,
        client_config: AioConfig | None = None,
        rate_limits: AccountRateLimits | None = None,
    ) -> None:
        self.settings = settings
        self.start_timeout = settings.start_timeout
        self.visibility_grace = settings.visibility_grace
        self.api = EcsApi(settings, config=client_config, rate_limits=rate_limits)
        self._loaders: dict[str, TaskLoader] = {}
        self.owned = OwnedTasks(
            api=self.api,
            cluster=settings.cluster,
            started_by=settings.service_name,
            describe=self._describe_own,
        )
        self._logs = TaskLogs(self.api, settings)
        self._definitions: dict[str, str] = {}  # family -> task definition ARN
        self._definition_locks: dict[str, asyncio.Lock] = {}
        self._heartbeat = HeartbeatGate(settings.heartbeat_timeout)
        self._callbacks: list[ExitCallback] = []

    # -- the contract ------------------------------------------------------

    async def start(self, spec: InstanceSpec) -> Handle:
        """Launch the instance's task, retrying transient errors with the same
        ``clientToken`` (RunTask is idempotent on it: a retry after a lost answer, or
        after a crash before the handle was saved, returns the task already launched)."""
        _check_id(spec.instance_id)
        for attempt in range(self.api.policy.attempts):
            try:
                return await self._launch(spec)
            except RuntimeUnavailableError:
                if attempt + 1 >= self.api.policy.attempts:
                    raise
                await asyncio.sleep(self.api.policy.delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def wait_ready(self, handle: Handle, timeout: float) -> Observation:
        """One observation (Fargate tasks take long to start, the liveness pass follows
        them from here); a task DescribeTasks does not know yet is asked for again with
        exponential backoff, as the ECS docs advise after RunTask, within ``timeout``."""
        key = str(handle.data.get("instance_id", ""))
        deadline = time.monotonic() + min(timeout, _VISIBLE_MAX_WAIT)
        delay = _VISIBLE_FIRST_DELAY
        while True:
            observed = (await self.poll({key: handle}))[key]
            remaining = deadline - time.monotonic()
            if observed is not INVISIBLE or remaining <= 0:
                return observed
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, _VISIBLE_MAX_DELAY)

    async def poll(self, handles: Mapping[str, Handle]) -> dict[str, Observation]:
        """What ECS says of each handle's task; a task launched less than
        ``VISIBILITY_GRACE`` seconds ago that ECS does not know yet is starting."""
        arns = {key: h.data.get("task_arn") for key, h in handles.items()}
        tasks = await self._tasks(
            [
                (str(handles[k].data.get("cluster") or self.settings.cluster), a)
                for k, a in arns.items()
                if a
            ]
        )
        port, now, grace = self.settings.container_port, time.time(), self.settings.visibility_grace
        observed = {
            key: INVISIBLE
            if arn and tasks.get(arn) is None and not_visible_yet(handles[key], now, grace)
            else observe_task(tasks.get(arn) if arn else None, port)
            for key, arn in arns.items()
        }
        if self.settings.check_heartbeat:
            await self._heartbeat.confirm(observed, arns)
        return observed

    async def stop(self, handle: Handle) -> None:
        """StopTask unless the task is already stopped or gone (a task launched within
        ``VISIBILITY_GRACE`` that DescribeTasks does not know yet is stopped all the
        same); returns at once."""
        arn, cluster = handle.data.get("task_arn"), self._cluster_of(handle)
        if not arn:
            return
        task = (await self._tasks([(cluster, arn)])).get(arn)
        if task is None and not_visible_yet(handle, time.time(), self.settings.visibility_grace):
            task = {}  # launched moments ago, not visible yet: stop it all the same
        if (
            task is None
            or task.get("lastStatus") == "STOPPED"
            or (task.get("desiredStatus") == "STOPPED")
        ):
            return
        log.info("stopping task instance=%s task=%s", handle.data.get("instance_id"), arn)
        try:
            await self.api.call(
                "StopTask", cluster=cluster, task=arn, reason="stopped by chroma-orch"
            )
        except Exception as exc:
            raise _unavailable("StopTask", exc) from exc

    async def delete(self, instance_id: str, handle: Handle | None, keep_data: bool) -> None:
        _check_id(instance_id)
        if handle is not None:
            await self.stop(handle)
        for task in (await self.owned.live(time.monotonic())).get(instance_id, []):
            await self.stop(self._handle(task))
        if self.settings.efs_file_system_id and not keep_data:
            await self._remove_data(instance_id)
        log.info("deleted instance=%s keep_data=%s", instance_id, keep_data)

    async def logs(self, instance_id: str, handle: Handle | None, tail: int) -> list[str]:
        arn = self._log_task(instance_id, handle)
        return await self._logs.tail(arn, tail) if arn else []

    async def follow_logs(
        self, instance_id: str, handle: Handle | None, tail: int
    ) -> AsyncIterator[list[str]]:
        arn = self._log_task(instance_id, handle)
        if arn is None:
            yield []
            return
        follow_handle = handle or make_handle(self.settings.cluster, arn, instance_id, None)

        async def gone() -> bool:
            observed = await self.poll({instance_id: follow_handle})
            return observed[instance_id].state is ObservedState.EXITED

        async for lines in self._logs.follow(arn, tail, gone):
            yield lines

    async def discover(self) -> dict[str, Handle]:
        """Our live tasks by instance (one per instance; extra ones are stopped)."""
        live = await self.owned.live(time.monotonic())
        found: dict[str, Handle] = {}
        for instance_id, tasks in live.items():
            keep = await self._dedupe(tasks)
            if keep is not None:
                found[instance_id] = self._handle(keep)
        return found

    def on_exit(self, callback: ExitCallback) -> None:
        """Kept for the contract: ECS exits are only seen by polling."""
        self._callbacks.append(callback)

    async def aclose(self) -> None:
        await self.owned.aclose()
        for loader in self._loaders.values():
            await loader.aclose()
        self._loaders.clear()
        await self.api.aclose()

    # -- looking tasks up ---------------------------------------------------

    def _cluster_of(self, handle: Handle) -> str:
        return str(handle.data.get("cluster") or self.settings.cluster)

    def _loader(self, cluster: str) -> TaskLoader:
        loader = self._loaders.get(cluster)
        if loader is None:

            async def fetch(arns: list[str]) -> dict[str, Any]:
                return await self._describe(cluster, arns)

            loader = TaskLoader(fetch, window=self.settings.batch_window, max_batch=100)
            self._loaders[cluster] = loader
        return loader

    async def _tasks(self, keys: Iterable[tuple[str, str]]) -> dict[str, Any]:
        """Described tasks by ARN (None when ECS does not know it), batched per cluster."""
        by_cluster: dict[str, list[str]] = {}
        for cluster, arn in keys:
            by_cluster.setdefault(cluster, []).append(arn)
        try:
            parts = await asyncio.gather(
                *(self._loader(c).load(arns) for c, arns in by_cluster.items())
            )
        except Exception as exc:
            raise _unavailable("DescribeTasks", exc) from exc
        return {arn: task for part in parts for arn, task in part.items()}

    async def _describe(self, cluster: str, arns: list[str]) -> dict[str, Any]:
        answer = await self.api.call("DescribeTasks", cluster=cluster, tasks=arns, include=["TAGS"])
        tasks = {str(task["taskArn"]): task for task in answer.get("tasks", [])}
        for task in tasks.values():
            self.owned.remember(task)
        return tasks

    async def _describe_own(self, arns: Iterable[str]) -> dict[str, Any]:
        return await self._tasks((self.settings.cluster, arn) for arn in arns)

    def _handle(self, task: OwnedTask) -> Handle:
        return make_handle(self.settings.cluster, task.task_arn, task.instance_id, task.generation)

    # -- starting -----------------------------------------------------------

    async def _dedupe(self, tasks: list[OwnedTask]) -> OwnedTask | None:
        """Keep one live task of an instance; stop any others (never two servers on
        one data directory)."""
        described = await self._tasks((self.settings.cluster, t.task_arn) for t in tasks)
        live = [t for t in tasks if described.get(t.task_arn) and is_live(described[t.task_arn])]
        live.sort(key=lambda t: str(described[t.task_arn].get("createdAt") or ""))
        for extra in live[1:]:
            log.warning(
                "stopping duplicate task instance=%s task=%s", extra.instance_id, extra.task_arn
            )
            await self.stop(self._handle(extra))
        return live[0] if live else None

    async def _launch(self, spec: InstanceSpec) -> Handle:
        definition = await self._definition(server_definition(self.settings, spec.options))
        overrides = {
            "containerOverrides": [
                {
                    "name": self.settings.container_name,
                    "command": server_command(self.settings, spec.instance_id),
                }
            ]
        }
        launched_at = time.time()
        arn = await self._run_task(
            definition, overrides, client_token(spec), instance_tags(self.settings, spec)
        )
        log.info("launched task instance=%s task=%s", spec.instance_id, arn)
        return make_handle(
            self.settings.cluster, arn, spec.instance_id, spec.generation, launched_at
        )

    async def _run_task(
        self, definition: str, overrides: dict[str, Any], token: str, tags: list[dict[str, str]]
    ) -> str:
        """The ARN of the task RunTask launched for ``token``, or of the task it
        launched earlier for it (a ``ConflictException`` names it in ``resourceIds``:
        the token is this instance's own, so is the task)."""
        try:
            answer = await self.api.call_once(
                "RunTask",
                cluster=self.settings.cluster,
                taskDefinition=definition,
                launchType="FARGATE",
                count=1,
                clientToken=token,
                startedBy=self.settings.service_name,
                tags=tags,
                overrides=overrides,
                networkConfiguration=network_configuration(self.settings),
            )
        except Exception as exc:
            if error_code(exc) == "ConflictException":
                return _conflicting_task(token, exc)
            if error_code(exc) in _REJECTED:
                raise StartFailedError(*_rejection(exc)) from exc
            raise _unavailable("RunTask", exc) from exc
        if not answer.get("tasks"):
            failures = answer.get("failures") or [{}]
            detail = "; ".join(f"{f.get('reason')}: {f.get('detail', '')}" for f in failures)
            reason, cause = classify_run_failures(failures)
            raise StartFailedError(reason, detail, cause)
        task = answer["tasks"][0]
        self.owned.remember(task)
        return str(task["taskArn"])

    async def _definition(self, params: dict[str, Any]) -> str:
        """The ARN of the task definition for ``params``, registered on first need."""
        family = str(params["family"])
        if family in self._definitions:
            return self._definitions[family]
        lock = self._definition_locks.setdefault(family, asyncio.Lock())
        async with lock:
            if family not in self._definitions:
                self._definitions[family] = await self._find_or_register(params)
            return self._definitions[family]

    async def _find_or_register(self, params: dict[str, Any]) -> str:
        family = str(params["family"])
        try:
            found = await self.api.call("DescribeTaskDefinition", taskDefinition=family)
            if found["taskDefinition"].get("status") == "ACTIVE":
                return str(found["taskDefinition"]["taskDefinitionArn"])
        except Exception as exc:
            if error_code(exc) not in _REJECTED:
                raise _unavailable("DescribeTaskDefinition", exc) from exc
        try:
            registered = await self.api.call("RegisterTaskDefinition", **params)
        except Exception as exc:
            if error_code(exc) in _REJECTED:
                raise StartFailedError("TaskDefinitionRejected", str(exc)) from exc
            raise _unavailable("RegisterTaskDefinition", exc) from exc
        arn = str(registered["taskDefinition"]["taskDefinitionArn"])
        log.info("registered task definition family=%s arn=%s", family, arn)
        return arn

    # -- data and logs ---------------------------------------------

    async def _remove_data(self, instance_id: str) -> None:
        """Run the one-shot cleanup task for the instance's EFS directory (not awaited).
        Its ``clientToken`` is new per attempt: a retried delete must launch a new
        cleanup task, not get the earlier (failed, stopped) one back."""
        definition = await self._definition(cleanup_definition(self.settings))
        script = f"rm -rf -- '{data_path(self.settings, instance_id)}'"
        overrides = {"containerOverrides": [{"name": CLEANUP_CONTAINER, "command": ["-c", script]}]}
        tags = [{"key": "chroma-orch:cleanup", "value": instance_id}]
        token = f"delete-{instance_id}-{uuid.uuid4().hex[:16]}"  # 60 of 64 characters
        await self._run_task(definition, overrides, token, tags)
        log.info(
            "removing data instance=%s path=%s", instance_id, data_path(self.settings, instance_id)
        )

    def _log_task(self, instance_id: str, handle: Handle | None) -> str | None:
        own = handle.data.get("task_arn") if handle is not None else None
        arn = own or self.owned.latest(instance_id)
        return str(arn) if arn else None


def _check_id(instance_id: str) -> None:
    if not INSTANCE_ID.fullmatch(instance_id):
        raise ValueError(f"invalid instance id {instance_id!r}")


def _conflicting_task(token: str, exc: Exception) -> str:
    ids = getattr(exc, "response", {}).get("resourceIds") or []
    if not ids:
        raise StartFailedError("RunTaskConflict", str(exc)) from exc
    log.info("adopting the task of clientToken=%s task=%s (ConflictException)", token, ids[0])
    return str(ids[0])


def _rejection(exc: Exception) -> tuple[str, str, ExitCause]:
    reason, cause = classify_run_rejection(str(exc))
    return reason, str(exc), cause


def _unavailable(operation: str, exc: Exception) -> RuntimeUnavailableError:
    if isinstance(exc, RuntimeUnavailableError):
        return exc
    kind = "throttled" if is_throttle(exc) else "transient" if is_transient(exc) else "failed"
    return RuntimeUnavailableError(f"{operation} {kind}: {error_code(exc) or type(exc).__name__}")
