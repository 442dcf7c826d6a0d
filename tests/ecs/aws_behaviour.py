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
- ECS-managed EBS volumes (RunTask ``volumeConfigurations``) and snapshots that
  take a while: ``aws_volumes.py`` (``volumes``), which says what AWS documents.
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

import urllib3

from tests.ecs.aws_volumes import ManagedVolumes

LIST_FILTERS = ("containerInstance", "family", "serviceName", "desiredStatus", "launchType")
"""ListTasks parameters that filter (``cluster`` and paging do not)."""

Reply = tuple[int, dict[str, Any]]
_REGION = re.compile(r"Credential=[^/]+/[^/]+/([^/]+)/")
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
    volumes: ManagedVolumes = field(default_factory=ManagedVolumes)
    """ECS-managed EBS volumes and EC2 snapshots (``aws_volumes.py``)."""
    _launched_at: dict[str, float] = field(default_factory=dict)
    _tokens: dict[str, _Launch] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self._lock:
            self.invisible_for = DEFAULT_INVISIBLE
            self.seen.clear()
            self.launched = 0
            self.replayed = 0
            self._launched_at.clear()
            self._tokens.clear()
            self.volumes.reset()

    def handle(
        self, target: str, body: dict[str, Any], forward: Any, region: str = "us-east-1"
    ) -> Reply:
        """Answer one ECS JSON call (``forward(body)`` asks moto)."""
        operation = target.rsplit(".", 1)[-1]
        with self._lock:
            self.seen[operation] += 1
            self.volumes.sync()
        if operation == "RunTask":
            return self._run_task(body, forward, region)
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
            with self._lock:
                self.volumes.annotate(answer)
        return status, answer

    def ec2(self, region: str, body: bytes, forward: Any) -> tuple[int, dict[str, str], bytes]:
        """Answer one EC2 (query protocol) call: moto's answer, with the volumes of
        stopped tasks detached and snapshots pending for a while."""
        with self._lock:
            self.volumes.sync()
        status, headers, payload = forward(body)
        if status == 200 and b"Action=CreateSnapshot&" in body + b"&":
            with self._lock:
                payload = self.volumes.snapshot_created(region, payload)
        return status, headers, payload

    def _run_task(self, body: dict[str, Any], forward: Any, region: str) -> Reply:
        token = body.get("clientToken")
        params = {k: v for k, v in body.items() if k != "clientToken"}
        with self._lock:
            known = self._tokens.get(token) if token else None
            if known is not None:
                return self._replay(known, params)
            refused = self.volumes.check(body, region)
            if refused is not None:
                return _error("InvalidParameterException", refused)
            status, answer = forward(body)
            if status == 200:
                self.volumes.launched(body, answer)
                self.launched += 1
                now = time.monotonic()
                for task in answer.get("tasks") or []:
                    self._launched_at[str(task["taskArn"])] = now
                if token:
                    self._tokens[token] = _Launch(params, answer)
            return status, answer

    def _replay(self, known: _Launch, params: dict[str, Any]) -> Reply:
        arns = [str(t["taskArn"]) for t in known.answer.get("tasks") or []]
        if known.params != params:
            return _error(
                "ConflictException",
                "the clientToken was used with other parameters",
                resourceIds=arns,
            )
        self.replayed += 1
        return 200, known.answer

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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        target = self.headers.get("X-Amz-Target") or ""
        headers = {k: v for k, v in self.headers.items() if k.lower() != "content-length"}
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
            return status, json.loads(payload or b"{}")

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
        self.wfile.write(payload)

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
        self.behaviour = AwsBehaviour(upstream)
        self._server = _ProxyServer(self.behaviour)
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
