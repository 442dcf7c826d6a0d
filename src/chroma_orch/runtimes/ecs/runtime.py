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
- Every lookup goes through one ``BatchLoader`` per cluster, so a liveness pass and
  any number of concurrent single-instance polls cost one ``DescribeTasks`` per
  100 tasks.
- With an events queue (``events_queue_url``), task states come from "ECS Task
  State Change" events recorded in the shared ``TaskStates`` (``events``); a task
  with no state there yet, or one not checked for ``events_sweep_interval``
  seconds (the safety sweep), is described as without the queue.
- With EBS (``storage=ebs``, ``volumes.py``), each task gets an ECS-managed volume
  restored from the instance's newest snapshot; a stopped task counts as stopping
  until its volume is snapshotted and deleted.
- With EFS, each instance has an access point of its own (``efs``) and a task
  definition mounting only it: its server sees its own directory at
  ``DATA_MOUNT`` and no other instance's. Stop keeps the data, start brings it
  back; delete runs a one-shot task through the same access point that empties
  it, waits for it, then deletes the access point (unless ``keep_data``) and
  deregisters the instance's task definitions.

Handle data: ``instance_id``, ``task_arn``, ``cluster``, ``launched_at`` (epoch
seconds, for tasks this service launched).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

from aiobotocore.config import AioConfig

from chroma_orch.runtimes.base import (
    INSTANCE_ID,
    AccountRateLimits,
    Endpoint,
    ExitCallback,
    ExitCause,
    Handle,
    InstanceSpec,
    LaunchTooLateError,
    Observation,
    ObservedState,
    RuntimeUnavailableError,
    ServerSpec,
    SpecCheck,
    StartFailedError,
    TaskStates,
    check_launch_by,
)
from chroma_orch.runtimes.batch import BatchLoader
from chroma_orch.runtimes.ecs.api import EcsApi
from chroma_orch.runtimes.ecs.checks import enforce
from chroma_orch.runtimes.ecs.ebs_snapshots import EbsSnapshots
from chroma_orch.runtimes.ecs.efs import AccessPoints
from chroma_orch.runtimes.ecs.events import TaskEvents
from chroma_orch.runtimes.ecs.heartbeat import HeartbeatGate
from chroma_orch.runtimes.ecs.logs import TaskLogs
from chroma_orch.runtimes.ecs.owned import OwnedTask, OwnedTasks
from chroma_orch.runtimes.ecs.settings import EcsSettings
from chroma_orch.runtimes.ecs.specs import check_spec, chroma_versions
from chroma_orch.runtimes.ecs.stops import classify_run_failures, classify_run_rejection
from chroma_orch.runtimes.ecs.tasks import (
    CLEANUP_CONTAINER,
    INVISIBLE,
    cleanup_command,
    cleanup_definition,
    client_token,
    family_scope,
    instance_tags,
    is_live,
    make_handle,
    network_configuration,
    not_visible_yet,
    observe_task,
    placement,
    server_command,
    server_definition,
)
from chroma_orch.runtimes.ecs.throttle import error_code
from chroma_orch.runtimes.ecs.throttle import unavailable as _unavailable
from chroma_orch.runtimes.ecs.volumes import EbsVolumes
from chroma_orch.runtimes.heartbeat import heartbeats

log = logging.getLogger(__name__)

_DESCRIBE_BATCH = 100
"""Tasks per DescribeTasks call (ECS's limit)."""

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
        task_states: TaskStates | None = None,
    ) -> None:
        if settings.storage_mode == "ebs" and not settings.ebs_role_arn:
            raise ValueError(
                "storage=ebs needs CHROMA_ORCH_ECS__EBS_ROLE_ARN (the ECS infrastructure role); "
                "set it, or choose CHROMA_ORCH_ECS__STORAGE=efs or ephemeral"
            )
        self.settings = settings
        self.start_timeout = settings.start_timeout
        self.wake_timeout = settings.wake_timeout
        self.visibility_grace = settings.visibility_grace
        self.launch_budget = settings.launch_budget
        self.api = EcsApi(settings, config=client_config, rate_limits=rate_limits)
        self._loaders: dict[str, BatchLoader] = {}
        self.owned = OwnedTasks(
            api=self.api,
            cluster=settings.cluster,
            started_by=settings.service_name,
            describe=self._describe_own,
        )
        self._logs = TaskLogs(self.api, settings)
        self.access_points = AccessPoints(self.api, settings)
        if settings.efs_access_point_id:
            log.warning("EFS_ACCESS_POINT_ID is ignored: each instance gets an access point")
        self.volumes = EbsVolumes(self.api, settings) if settings.storage_mode == "ebs" else None
        self.native_snapshots = (  # chroma-orch snapshots as EBS snapshots (docs/data.md)
            EbsSnapshots(self.api, settings, self.volumes) if self.volumes is not None else None
        )
        self.snapshots_unsupported = (
            None
            if self.native_snapshots is not None
            else f"storage={settings.storage_mode} has no volume snapshots; chroma-orch "
            'snapshots on ECS need CHROMA_ORCH_ECS__STORAGE=ebs (docs/data.md "ECS")'
        )
        self._definitions: dict[str, str] = {}  # family -> task definition ARN
        self._definition_locks: dict[str, asyncio.Lock] = {}
        self._heartbeat = HeartbeatGate(settings.heartbeat_timeout)
        self._callbacks: list[ExitCallback] = []
        self.events = (
            TaskEvents(self.api, settings, task_states)
            if settings.events_queue_url and task_states is not None
            else None
        )
        self._health: dict[str, str] = {}  # instance id -> the task's last healthStatus

    # -- the contract ------------------------------------------------------

    async def preflight(self) -> None:
        """The start-up check (``checks``), as ``STARTUP_CHECK`` says."""
        await enforce(self.api, self.settings)

    def chroma_versions(self) -> list[str]:
        """``SpecSupport``: the image tags a spec may name, the default first."""
        return chroma_versions(self.settings)

    def check_spec(self, spec: ServerSpec) -> SpecCheck:
        """``SpecSupport``: the spec on the settings' defaults, and its problems
        (``specs``)."""
        return check_spec(self.settings, spec)

    def _runnable(self, server: ServerSpec) -> ServerSpec:
        """The resolved spec a start runs, or the start fails with its problems (a
        spec accepted earlier that the settings no longer allow)."""
        checked = self.check_spec(server)
        if checked.problems:
            raise StartFailedError("InvalidSpec", "; ".join(checked.problems))
        return checked.resolved

    async def start(self, spec: InstanceSpec) -> Handle:
        """Launch the instance's task, retrying transient errors with the same
        ``clientToken`` (RunTask is idempotent on it: a retry after a lost answer, or
        after a crash before the handle was saved, returns the task already launched)."""
        _check_id(spec.instance_id)
        for attempt in range(self.api.policy.attempts):
            try:
                return await self._launch(spec)
            except LaunchTooLateError:
                raise  # past its launch_by: a later start tries again
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

    def polls_per_second(self) -> float | None:
        """Tasks DescribeTasks's budget describes per second (100 a call); None with
        task events, which answer the liveness pass's polls instead."""
        if self.events is not None:
            return None
        return self.settings.api_limits["describe"][1] * _DESCRIBE_BATCH

    async def poll(self, handles: Mapping[str, Handle]) -> dict[str, Observation]:
        """What ECS says of each handle's task; a task launched less than
        ``VISIBILITY_GRACE`` seconds ago that ECS does not know yet is starting."""
        arns = {key: h.data.get("task_arn") for key, h in handles.items()}
        tasks = await self._known(
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
        for key, arn in arns.items():
            task = tasks.get(arn) if arn else None
            if task is None or observed[key].state is ObservedState.EXITED:
                self._health.pop(key, None)
            else:
                self._health[key] = str(task.get("healthStatus") or "UNKNOWN")
        if self.settings.check_heartbeat:
            await self._heartbeat.confirm(observed, arns)
        if self.volumes is not None:
            await self._saving(observed, handles)
        return observed

    async def _saving(
        self, observed: dict[str, Observation], handles: Mapping[str, Handle]
    ) -> None:
        """A stopped task with storage=ebs is stopping until its volume is saved
        (snapshot completed, volume deleted): a restart or a stop then finds the data
        in the newest snapshot. A failure to save says so and is tried again."""
        assert self.volumes is not None
        volumes = self.volumes

        async def save(key: str) -> None:
            instance_id = str(handles[key].data.get("instance_id") or key)
            try:
                waiting = await volumes.save(instance_id)
            except Exception as exc:
                waiting = f"saving failed for now ({_unavailable('EC2', exc)})"
            if waiting is not None:
                observed[key] = Observation(
                    ObservedState.STOPPING, message=f"saving the data: {waiting}"
                )

        exited = [k for k, o in observed.items() if o.state is ObservedState.EXITED]
        await asyncio.gather(*(save(key) for key in exited))

    async def heartbeat(self, servers: Mapping[str, Endpoint], timeout: float) -> dict[str, bool]:
        """Chroma's heartbeat at each task's address; without a network path to the tasks
        (``check_heartbeat`` off), the container health check's verdict as ECS last
        reported it (``healthStatus``, read by ``poll``): only UNHEALTHY is a miss
        (docs/ecs.md "Liveness")."""
        if not self.settings.check_heartbeat:
            return {key: self._health.get(key) != "UNHEALTHY" for key in servers}
        return await heartbeats(servers, timeout)

    async def stop(self, handle: Handle) -> None:
        """StopTask unless the task is already stopped or gone (a task launched within
        ``VISIBILITY_GRACE`` that DescribeTasks does not know yet is stopped all the
        same); returns at once."""
        arn, cluster = handle.data.get("task_arn"), self._cluster_of(handle)
        if not arn:
            return
        task = (await self._known([(cluster, arn)])).get(arn)
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
        if self.volumes is not None:
            await self._release_volumes(instance_id, keep_data)
        elif self.settings.storage_mode == "efs" and self.settings.efs_file_system_id:
            await self._delete_storage(instance_id, keep_data)
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

    def _loader(self, cluster: str) -> BatchLoader:
        loader = self._loaders.get(cluster)
        if loader is None:

            async def fetch(arns: list[str]) -> dict[str, Any]:
                return await self._describe(cluster, arns)

            loader = BatchLoader(
                fetch, window=self.settings.batch_window, max_batch=_DESCRIBE_BATCH
            )
            self._loaders[cluster] = loader
        return loader

    async def _known(self, keys: Iterable[tuple[str, str]]) -> dict[str, Any]:
        """``_tasks``, answered from the event-known states where there are fresh ones."""
        wanted = list(keys)
        if self.events is None:
            return await self._tasks(wanted)
        max_age = self.settings.events_sweep_interval
        try:
            known = await self.events.states.fresh((arn for _, arn in wanted), max_age)
        except Exception as exc:  # the database is unreachable: describe them all
            log.warning("task states unavailable error=%s", type(exc).__name__)
            known = {}
        rest = await self._tasks(k for k in wanted if k[1] not in known)
        return known | rest

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
        if self.events is not None and tasks:
            await self.events.record_described(tasks.values())
        return tasks

    async def _describe_own(self, arns: Iterable[str]) -> dict[str, Any]:
        return await self._tasks((self.settings.cluster, arn) for arn in arns)

    def _handle(self, task: OwnedTask) -> Handle:
        return make_handle(self.settings.cluster, task.task_arn, task.instance_id, task.generation)

    # -- starting -----------------------------------------------------------

    async def _dedupe(self, tasks: list[OwnedTask]) -> OwnedTask | None:
        """Keep one live task of an instance; stop any others (never two servers on
        one data directory). A lone task is kept as the listing described it (ECS
        wants it running): describing it again, one instance after another, cost a
        DescribeTasks per instance on every orphan pass."""
        if len(tasks) == 1:
            return tasks[0]
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
        access_point = None
        if self.settings.storage_mode == "efs" and self.settings.efs_file_system_id:
            access_point = await self.access_points.ensure(spec.tenant_id, spec.instance_id)
        server = self._runnable(spec.server)
        definition = await self._definition(server_definition(self.settings, server, access_point))
        command = server_command(self.settings, server)
        overrides = {
            "containerOverrides": [{"name": self.settings.container_name, "command": command}]
        }
        token = client_token(spec)
        extra: dict[str, Any] = {}
        if self.volumes is not None:
            snapshot = await self.volumes.prepare(spec.instance_id, token)
            extra["volumeConfigurations"] = self.volumes.configuration(spec, token, snapshot)
            log.info("restoring instance=%s snapshot=%s", spec.instance_id, snapshot)
        launched_at = time.time()
        arn = await self._run_task(
            definition,
            overrides,
            token,
            instance_tags(self.settings, spec),
            before_send=lambda: check_launch_by(spec),
            **extra,
        )
        log.info("launched task instance=%s task=%s", spec.instance_id, arn)
        return make_handle(
            self.settings.cluster, arn, spec.instance_id, spec.generation, launched_at
        )

    async def _run_task(
        self,
        definition: str,
        overrides: dict[str, Any],
        token: str,
        tags: list[dict[str, str]],
        before_send: Callable[[], None] | None = None,
        **extra: Any,
    ) -> str:
        """The ARN of the task RunTask launched for ``token``, or of the task it
        launched earlier for it (a ``ConflictException`` names it in ``resourceIds``:
        the token is this instance's own, so is the task). ``before_send`` runs before
        each attempt is sent (a start's ``check_launch_by``)."""
        try:
            answer = await self.api.call_once(
                "RunTask",
                before_send,
                cluster=self.settings.cluster,
                taskDefinition=definition,
                count=1,
                clientToken=token,
                startedBy=self.settings.service_name,
                tags=tags,
                overrides=overrides,
                networkConfiguration=network_configuration(self.settings),
                **placement(self.settings),
                **extra,
            )
        except LaunchTooLateError:
            raise
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

    async def _release_volumes(self, instance_id: str, keep_data: bool) -> None:
        """A deleted instance's EBS data: kept as its newest snapshot (a volume not
        saved yet is saved first), or every volume and snapshot removed."""
        assert self.volumes is not None
        if not keep_data:
            await self.volumes.remove(instance_id)
            return
        waiting = await self.volumes.save(instance_id)
        if waiting is not None:
            raise RuntimeUnavailableError(f"saving the data before the delete: {waiting}")

    async def _delete_storage(self, instance_id: str, keep_data: bool) -> None:
        """Empty the instance's access point and delete it (unless ``keep_data``), then
        deregister the task definitions that mount it."""
        access_point = await self.access_points.find(instance_id)
        if access_point is None:
            return  # never started: no access point, no data
        if not keep_data:
            await self._remove_data(instance_id, access_point)
            await self.access_points.delete(instance_id, access_point)
        await self._deregister(family_scope(self.settings, access_point))

    async def _remove_data(self, instance_id: str, access_point: str) -> None:
        """Run the one-shot task that empties the access point and wait until it has
        exited 0 (else the delete fails and is retried). Its ``clientToken`` is new per
        attempt: a retried delete must launch a new task, not get the earlier (failed,
        stopped) one back."""
        definition = await self._definition(cleanup_definition(self.settings, access_point))
        command = cleanup_command(self.settings)
        overrides = {"containerOverrides": [{"name": CLEANUP_CONTAINER, "command": command}]}
        tags = [{"key": "chroma-orch:cleanup", "value": instance_id}]
        token = f"delete-{instance_id}-{uuid.uuid4().hex[:16]}"  # 60 of 64 characters
        launched_at = time.time()
        arn = await self._run_task(definition, overrides, token, tags)
        log.info("removing data instance=%s access_point=%s", instance_id, access_point)
        await self._until_exited(arn, launched_at)

    async def _until_exited(self, arn: str, launched_at: float) -> None:
        """Wait (backing off) for a one-shot task to stop; its container must exit 0."""
        deadline = time.monotonic() + self.settings.cleanup_timeout
        delay = _VISIBLE_FIRST_DELAY
        handle = make_handle(self.settings.cluster, arn, "", None, launched_at)
        while time.monotonic() < deadline:
            task = (await self._tasks([(self.settings.cluster, arn)])).get(arn)
            if task is None and not not_visible_yet(
                handle, time.time(), self.settings.visibility_grace
            ):
                raise RuntimeUnavailableError(f"cleanup task {arn} is gone")
            if task is not None and task.get("lastStatus") == "STOPPED":
                codes = [c.get("exitCode") for c in task.get("containers") or []]
                if codes and all(code == 0 for code in codes):
                    return
                raise RuntimeUnavailableError(f"cleanup task failed: {task.get('stoppedReason')}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, _VISIBLE_MAX_DELAY)
        raise RuntimeUnavailableError(f"cleanup task {arn} still running")

    async def _deregister(self, prefix: str) -> None:
        """Deregister every active task definition whose family begins with ``prefix``
        (an instance's own; running tasks are not affected)."""
        try:
            families = await self.api.call(
                "ListTaskDefinitionFamilies", familyPrefix=prefix, status="ACTIVE"
            )
            for family in families.get("families") or []:
                self._definitions.pop(family, None)
                listed = await self.api.call(
                    "ListTaskDefinitions", familyPrefix=family, status="ACTIVE"
                )
                for arn in listed.get("taskDefinitionArns") or []:
                    await self.api.call("DeregisterTaskDefinition", taskDefinition=arn)
                    log.info("deregistered task definition arn=%s", arn)
        except Exception as exc:
            raise _unavailable("DeregisterTaskDefinition", exc) from exc

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
