"""EFS access point behaviour moto does not have, for the AWS-behaviour proxy
(tests/ecs/aws_behaviour.py routes ``/2015-02-01/access-points`` here):

- ``ClientToken`` idempotency: CreateAccessPoint with a token already used answers
  HTTP 409 ``AccessPointAlreadyExists`` naming the existing ``AccessPointId``
  (EFS API reference, CreateAccessPoint: "ClientToken ... to ensure idempotent
  creation"; "Errors": AccessPointAlreadyExists, "Returned if the access point that
  you are trying to create already exists, with the creation token you provided in
  the request"). moto ignores the token and creates another access point.
- ``creating_for``: a new access point is ``creating`` for that many seconds
  (CreateAccessPoint answers ``LifeCycleState: creating``; "Creating access points",
  EFS user guide), then ``available``. moto makes them available at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

PATH = "/2015-02-01/access-points"
Raw = tuple[int, dict[str, str], bytes]
Forward = Callable[[bytes], Raw]


@dataclass
class EfsBehaviour:
    creating_for: float = 0.0
    seen: Counter[str] = field(default_factory=Counter)
    """EFS access point operations by name, as the layer received them."""
    _tokens: dict[str, str] = field(default_factory=dict)  # ClientToken -> access point id
    _created_at: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self._lock:
            self.creating_for = 0.0
            self.seen.clear()
            self._tokens.clear()
            self._created_at.clear()

    def handle(self, method: str, body: bytes, forward: Forward) -> Raw:
        operation = {
            "POST": "CreateAccessPoint",
            "GET": "DescribeAccessPoints",
            "DELETE": "DeleteAccessPoint",
        }.get(method, method)
        with self._lock:
            self.seen[operation] += 1
        if operation == "CreateAccessPoint":
            return self._create(body, forward)
        status, headers, payload = forward(body)
        if operation == "DescribeAccessPoints" and status == 200:
            answer = json.loads(payload)
            for point in answer.get("AccessPoints") or []:
                point["LifeCycleState"] = self._state(str(point["AccessPointId"]))
            payload = json.dumps(answer).encode()
        return status, headers, payload

    def _create(self, body: bytes, forward: Forward) -> Raw:
        token = json.loads(body or b"{}").get("ClientToken")
        with self._lock:
            existing = self._tokens.get(token) if token else None
            if existing is not None:
                error = {
                    "ErrorCode": "AccessPointAlreadyExists",
                    "Message": "An access point with this client token already exists",
                    "AccessPointId": existing,
                }
                headers = {
                    "Content-Type": "application/json",
                    "x-amzn-ErrorType": "AccessPointAlreadyExists",
                }
                return 409, headers, json.dumps(error).encode()
            status, headers, payload = forward(body)
            if status != 200:
                return status, headers, payload
            answer = json.loads(payload)
            point = str(answer["AccessPointId"])
            if token:
                self._tokens[token] = point
            self._created_at[point] = time.monotonic()
            answer["LifeCycleState"] = self._state(point)
            return status, headers, json.dumps(answer).encode()

    def _state(self, point: str) -> str:
        created = self._created_at.get(point)
        young = created is not None and time.monotonic() - created < self.creating_for
        return "creating" if young else "available"
