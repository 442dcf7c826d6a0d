"""AWS behaviour moto does not have: a thin HTTP proxy in front of moto's server.

The ECS tests point the runtime's ``ENDPOINT_URL`` at this proxy, so the runtime's
real code path (aiobotocore, request signing, botocore's error parsing) meets what
AWS does; the runtime does not know it is there. Everything not named below is
forwarded to moto unchanged. Each behaviour cites the AWS documentation it follows:

- ``invisible_for`` (eventual consistency): for that many seconds after RunTask a
  task is absent from DescribeTasks and reported in ``failures`` with reason
  ``MISSING``. "The Amazon ECS API follows an eventual consistency model ... Run
  the DescribeTasks command using an exponential backoff algorithm" (RunTask, API
  reference: https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RunTask.html).
- ``clientToken`` idempotency: RunTask with a used token and the same parameters
  returns the existing task without launching another; with other parameters it
  fails with ``ConflictException`` whose ``resourceIds`` names the existing task
  (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/ECS_Idempotency.html;
  RunTask "Errors": ConflictException, ``resourceIds``). moto ignores the token.
- ListTasks ``startedBy`` must be the only filter: "When you specify startedBy as
  the filter, it must be the only filter that you use"
  (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ListTasks.html);
  combined with another filter the proxy answers ``InvalidParameterException``.
- EFS access points (``efs``, tests/ecs/aws_efs.py): ``ClientToken`` idempotency
  of CreateAccessPoint (``AccessPointAlreadyExists``) and the ``creating`` state.
- "ECS Task State Change" events: every task state change the layer sees (RunTask,
  StopTask, and the stops ``aws_stops`` injects) is put on the default event bus
  through EventBridge ``PutEvents`` (source ``aws.ecs``, ``detail`` = the task as
  DescribeTasks shows it), so a rule sending them to an SQS queue really runs
  ("Amazon ECS task state change events",
  https://docs.aws.amazon.com/AmazonECS/latest/developerguide/ecs_task_events.html).
  Each change raises the task's ``version`` ("Every time a task experiences a change
  that starts a CloudWatch event, the version counter is incremented", Task in the
  API reference: https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Task.html),
  which DescribeTasks answers carry too. moto emits no ECS events itself.
- ``lifecycle`` (a task takes its time to start): tasks launched while it is set go
  through PROVISIONING, PENDING (with the image pull) and RUNNING as the test moves
  them on, with their timestamps (``tests/ecs/aws_lifecycle.py``, developer guide
  "Amazon ECS task lifecycle").
- ECS-managed EBS volumes (RunTask ``volumeConfigurations``) and snapshots that
  take a while: ``aws_volumes.py`` (``volumes``), which says what AWS documents.
- ``rates`` (request throttling): every call draws on the account's token bucket of
  its kind and, when it is empty, fails with ``ThrottlingException`` / "Rate
  exceeded" (HTTP 400); a RunTask that launches also draws one token per task on
  Fargate's task-launch bucket. Figures and references: ``aws_rates.py``.
  ``rates.storm(seconds)`` throttles every call for a while.
- ``stop_takes`` (a stop takes its time): a task stopped by StopTask while it is
  set is shown on its way out (desiredStatus ``STOPPED``, lastStatus
  ``DEACTIVATING``, no ``stoppedAt``) for that many seconds, then ``STOPPED``.
  "When StopTask is called on a task, the equivalent of docker stop is issued to the
  containers running in the task. This results in a SIGTERM value and a default
  30-second timeout, after which the SIGKILL value is sent" (StopTask, API reference:
  https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_StopTask.html; the
  container's ``stopTimeout`` sets it). moto stops a task at once. (No event is put
  when the stop ends: the tests that set it do not read events.)
- ``task_quota`` (Fargate's concurrent-task quota, "Amazon ECS service quotas":
  "Fargate On-Demand resource count"): a RunTask that would run more tasks than that
  fails with ``ClientException`` "You've reached the limit on the number of tasks you
  can run concurrently" (the wording ECS reports when it cannot place a task for
  that quota). Counts the tasks launched through the layer and not stopped through it.

RunTask calls run concurrently (AWS serves them so); only calls with the same
``clientToken`` are taken one at a time, so the idempotency record stays exact.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import urllib3

from tests.ecs.aws_efs import PATH as EFS_ACCESS_POINTS
from tests.ecs.aws_efs import EfsBehaviour
from tests.ecs.aws_lifecycle import TaskLifecycle
from tests.ecs.aws_rates import AccountRates
from tests.ecs.aws_volumes import ManagedVolumes

LIST_FILTERS = ("containerInstance", "family", "serviceName", "desiredStatus", "launchType")
"""ListTasks parameters that filter (``cluster`` and paging do not)."""

Reply = tuple[int, dict[str, Any]]
_REGION = re.compile(r"Credential=[^/]+/[^/]+/([^/]+)/")
TASK_QUOTA_REACHED = (
    "You've reached the limit on the number of tasks you can run concurrently. "
    "For more information, see the Troubleshooting section."
)
DEFAULT_INVISIBLE = 0.3
"""Seconds every test's tasks stay invisible to DescribeTasks unless it sets its own."""


@dataclass
class _Launch:
    params: dict[str, Any]
    answer: dict[str, Any]


@dataclass
class AwsBehaviour:
    """The state and rules of the layer (one per moto; ``reset`` between tests)."""

    upstream: str
    invisible_for: float = DEFAULT_INVISIBLE
    """Seconds a task stays invisible to DescribeTasks after RunTask (the whole suite
    runs with a short delay; tests set their own)."""
    seen: Counter[str] = field(default_factory=Counter)
    """ECS operations by name, as the layer received them."""
    launched: int = 0
    """RunTask calls that launched a task in moto."""
    replayed: int = 0
    """RunTask calls answered from the idempotency record (no new task)."""
    run_task_requests: list[dict[str, Any]] = field(default_factory=list)
    """Every RunTask request body as ECS received it (what the runtime asked for:
    launchType or capacityProviderStrategy, overrides, tags...)."""
    efs: EfsBehaviour = field(default_factory=EfsBehaviour)
    """EFS access point behaviour (tests/ecs/aws_efs.py)."""
    described: Counter[str] = field(default_factory=Counter)
    """DescribeTasks lookups by task ARN, as the layer received them."""
    published: list[dict[str, Any]] = field(default_factory=list)
    """The ``detail`` of every task state change event put on the bus, in order."""
    versions: Counter[str] = field(default_factory=Counter)
    """Each task's ``version``: its state changes so far."""
    drop_events: bool = False
    """Lose the events of the next changes (EventBridge delivery is at least once,
    but a queue can lose messages: a purge, an expired retention, a full DLQ...)."""
    lifecycle: TaskLifecycle | None = None
    """Set: the tasks launched from then on start as slowly as the test says."""
    volumes: ManagedVolumes = field(default_factory=ManagedVolumes)
    """ECS-managed EBS volumes and EC2 snapshots (``aws_volumes.py``)."""
    rates: AccountRates = field(default_factory=AccountRates)
    """The account's request buckets (on at AWS's rates; ``rates.on = False`` to lift)."""
    throttled: Counter[str] = field(default_factory=Counter)
    """Calls answered ``ThrottlingException``, by operation."""
    task_quota: int | None = None
    """Tasks the account may run at once (None: no limit)."""
    stop_takes: float = 0.0
    """Seconds a task stopped by StopTask stays on its way out (0: stopped at once)."""
    _epoch: int = 0
    """Bumped by ``reset``: a call still in flight from the test before (its service
    torn down mid-RunTask) does not count in the next test's figures."""
    _running: set[str] = field(default_factory=set)
    _launched_at: dict[str, float] = field(default_factory=dict)
    _stopping_until: dict[str, float] = field(default_factory=dict)
    _tokens: dict[str, _Launch] = field(default_factory=dict)
    _token_locks: dict[str, threading.Lock] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self._lock:
            self._epoch += 1
            self.invisible_for = DEFAULT_INVISIBLE
            self.seen.clear()
            self.throttled.clear()
            self.launched = 0
            self.replayed = 0
            self.run_task_requests.clear()
            self.described.clear()
            self.drop_events = False
            self.published.clear()
            self.versions.clear()
            self.lifecycle = None
            self.task_quota = None
            self.stop_takes = 0.0
            self._running.clear()
            self._launched_at.clear()
            self._stopping_until.clear()
            self._tokens.clear()
            self._token_locks.clear()
            self.volumes.reset()
        self.efs.reset()
        self.rates.reset()

    def handle(
        self, target: str, body: dict[str, Any], forward: Any, region: str = "us-east-1"
    ) -> Reply:
        """Answer one ECS JSON call (``forward(body)`` asks moto)."""
        operation = target.rsplit(".", 1)[-1]
        with self._lock:
            self.seen[operation] += 1
            if operation == "DescribeTasks":
                self.described.update(str(arn) for arn in body.get("tasks") or [])
            self.volumes.sync()
        if not self.rates.allow(operation):
            return self._throttle(operation)
        if operation == "RunTask":
            return self._run_task(body, forward, region)
        if operation == "StopTask":
            with self._lock:
                self._running.discard(str(body.get("task")))
        if operation == "ListTasks" and body.get("startedBy"):
            others = [name for name in LIST_FILTERS if body.get(name)]
            if others:
                return _error(
                    "InvalidParameterException",
                    f"startedBy must be the only filter (also given: {', '.join(others)})",
                )
        status, answer = forward(body)
        if operation == "DescribeTasks" and status == 200:
            self._hide_fresh(answer)
            self._show_stopping(answer.get("tasks") or [])
            if self.lifecycle is not None:
                self.lifecycle.describe(answer)
            for task in answer.get("tasks") or []:
                task["version"] = self.versions[str(task["taskArn"])]
            with self._lock:
                self.volumes.annotate(answer)
        if operation == "StopTask" and status == 200 and answer.get("task"):
            if self.stop_takes > 0:
                with self._lock:
                    until = time.monotonic() + self.stop_takes
                    self._stopping_until.setdefault(str(answer["task"]["taskArn"]), until)
            self._show_stopping([answer["task"]])
            self.task_changed(answer["task"])
        return status, answer

    def task_changed(self, task: dict[str, Any]) -> None:
        """Put an "ECS Task State Change" event for ``task`` (as DescribeTasks shows
        it) on the default bus, with the task's next ``version``."""
        arn = str(task["taskArn"])
        with self._lock:
            self.versions[arn] += 1
            detail = task | {"version": self.versions[arn]}
            if self.drop_events:
                return
            self.published.append(detail)
        self.put_events([detail])

    def put_events(self, details: list[dict[str, Any]]) -> None:
        """PutEvents of these task details as ECS would send them (tests replay old
        ones to show duplicates and late events)."""
        region = str(details[0]["taskArn"]).split(":")[3] if details else "us-east-1"
        entries = [
            {
                "Source": "aws.ecs",
                "DetailType": "ECS Task State Change",
                "Resources": [str(d["taskArn"])],
                "Detail": json.dumps(d, default=str),
            }
            for d in details
        ]
        events = boto3.client("events", region_name=region, endpoint_url=self.upstream)
        for start in range(0, len(entries), 10):
            events.put_events(Entries=entries[start : start + 10])

    def describe_changed(self, region: str, cluster: str, task_arn: str) -> None:
        """A task changed behind the API (``aws_stops``): describe it in moto, publish."""
        ecs = boto3.client("ecs", region_name=region, endpoint_url=self.upstream)
        task = ecs.describe_tasks(cluster=cluster, tasks=[task_arn])["tasks"][0]
        self.task_changed(json.loads(json.dumps(task, default=str)))

    def ec2(self, region: str, body: bytes, forward: Any) -> tuple[int, dict[str, str], bytes]:
        """Answer one EC2 (query protocol) call: moto's answer, with the volumes of
        stopped tasks detached and snapshots pending for a while."""
        with self._lock:
            self.volumes.sync()
        status, headers, payload = forward(body)
        if status == 200 and b"Action=CreateSnapshot&" in body + b"&":
            with self._lock:
                payload = self.volumes.snapshot_created(region, payload)
        elif status == 200 and b"Action=CopySnapshot&" in body + b"&":
            with self._lock:
                payload = self.volumes.snapshot_copied(region, body, payload)
        return status, headers, payload

    def _throttle(self, operation: str) -> Reply:
        with self._lock:
            self.throttled[operation] += 1
        return _error("ThrottlingException", "Rate exceeded")

    def _run_task(self, body: dict[str, Any], forward: Any, region: str) -> Reply:
        token = body.get("clientToken")
        with self._lock:
            self.run_task_requests.append(body)
        if not token:
            return self._launch(body, forward, None, region)
        with self._lock:
            lock = self._token_locks.setdefault(str(token), threading.Lock())
        with lock:  # one call per token at a time; other tokens go on
            with self._lock:
                known = self._tokens.get(token)
                if known is not None:
                    return self._replay(
                        known, {k: v for k, v in body.items() if k != "clientToken"}
                    )
            return self._launch(body, forward, str(token), region)

    def _launch(self, body: dict[str, Any], forward: Any, token: str | None, region: str) -> Reply:
        count = int(body.get("count", 1))
        with self._lock:
            epoch = self._epoch
            if self.task_quota is not None and len(self._running) + count > self.task_quota:
                return _error("ClientException", TASK_QUOTA_REACHED)
            refused = self.volumes.check(body, region)
            if refused is not None:
                return _error("InvalidParameterException", refused)
        if not self.rates.launch(count):
            return self._throttle("RunTask")
        status, answer = forward(body)
        if status != 200:
            return status, answer
        now = time.monotonic()
        with self._lock:
            if epoch != self._epoch:
                return status, answer
            self.volumes.launched(body, answer)
            self.launched += 1
            for task in answer.get("tasks") or []:
                self._launched_at[str(task["taskArn"])] = now
                self._running.add(str(task["taskArn"]))
            if self.lifecycle is not None:
                self.lifecycle.launched(answer)
            if token:
                params = {k: v for k, v in body.items() if k != "clientToken"}
                self._tokens[token] = _Launch(params, answer)
        for task in answer.get("tasks") or []:
            self.task_changed(task)
        return status, answer

    def _replay(self, known: _Launch, params: dict[str, Any]) -> Reply:
        arns = [str(t["taskArn"]) for t in known.answer.get("tasks") or []]
        if known.params != params:
            return _error(
                "ConflictException",
                "the clientToken was used with other parameters",
                resourceIds=arns,
            )
        self.replayed += 1  # (under the layer's lock)
        return 200, known.answer

    def _show_stopping(self, tasks: list[dict[str, Any]]) -> None:
        """Tasks still on their way out (``stop_takes``), as ECS shows them then."""
        now = time.monotonic()
        with self._lock:
            stopping = {arn for arn, until in self._stopping_until.items() if now < until}
        for task in tasks:
            if task["taskArn"] in stopping:
                task["lastStatus"] = "DEACTIVATING"
                task.pop("stoppedAt", None)
                for container in task.get("containers") or []:
                    container["lastStatus"] = "RUNNING"
                    container.pop("exitCode", None)

    def _hide_fresh(self, answer: dict[str, Any]) -> None:
        now = time.monotonic()
        with self._lock:
            hidden = {arn for arn, at in self._launched_at.items() if now - at < self.invisible_for}
        if not hidden:
            return
        tasks = answer.get("tasks") or []
        answer["tasks"] = [t for t in tasks if t["taskArn"] not in hidden]
        failures = answer.setdefault("failures", [])
        failures.extend(
            {"arn": t["taskArn"], "reason": "MISSING"} for t in tasks if t["taskArn"] in hidden
        )


def _error(code: str, message: str, **members: Any) -> Reply:
    return 400, {"__type": code, "message": message, **members}


LAYER: AwsBehaviour | None = None
"""The running layer (``aws_stops`` tells it of the stops it injects)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        target = self.headers.get("X-Amz-Target") or ""
        headers = {k: v for k, v in self.headers.items() if k.lower() != "content-length"}
        if self.path.startswith(EFS_ACCESS_POINTS):

            def forward_efs(data: bytes) -> tuple[int, dict[str, str], bytes]:
                return self.server.forward(self.command, self.path, headers, data)

            self._send(*self.server.behaviour.efs.handle(self.command, raw, forward_efs))
            return
        region_match = _REGION.search(self.headers.get("Authorization") or "")
        region = region_match.group(1) if region_match else "us-east-1"
        if region_match and "/ec2/" in (self.headers.get("Authorization") or ""):

            def forward_ec2(body: bytes) -> tuple[int, dict[str, str], bytes]:
                return self.server.forward(self.command, self.path, headers, body)

            self._send(*self.server.behaviour.ec2(region, raw, forward_ec2))
            return
        if not target.startswith("AmazonEC2ContainerServiceV20141113."):
            self._send(*self.server.forward(self.command, self.path, headers, raw))
            return

        def forward(body: dict[str, Any]) -> Reply:
            data = json.dumps(body).encode()
            status, _, payload = self.server.forward(self.command, self.path, headers, data)
            try:
                return status, json.loads(payload or b"{}")
            except ValueError:  # moto failed with a page of its own: a 5xx to the caller
                return 500, {"__type": "InternalFailure", "message": payload[:200].decode()}

        status, answer = self.server.behaviour.handle(
            target, json.loads(raw or b"{}"), forward, region
        )
        content = {"Content-Type": "application/x-amz-json-1.1"}
        self._send(status, content, json.dumps(answer).encode())

    do_GET = do_PUT = do_DELETE = do_POST  # noqa: N815 (forwarded as they are)

    def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        try:
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client left (a long poll cancelled at shutdown)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, behaviour: AwsBehaviour) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.behaviour = behaviour
        self._pool = urllib3.PoolManager(maxsize=64)

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        response = self._pool.request(
            method,
            self.behaviour.upstream + path,
            body=body,
            headers=headers,
            retries=False,
            redirect=False,
        )
        return response.status, dict(response.headers), response.data


class AwsBehaviourProxy:
    """Runs the layer's HTTP server in a thread; ``url`` is the endpoint to use."""

    def __init__(self, upstream: str) -> None:
        global LAYER
        self.behaviour = LAYER = AwsBehaviour(upstream)
        self._server = _ProxyServer(self.behaviour)
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
