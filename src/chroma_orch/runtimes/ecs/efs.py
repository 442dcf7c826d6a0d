"""Per-instance EFS access points of the ``ecs`` runtime.

Each instance gets an access point of its own on ``EFS_FILE_SYSTEM_ID``, rooted at
``EFS_ROOT/<tenant id>/<instance id>`` (created by EFS on first mount, owned by
``EFS_POSIX_UID``/``GID`` with permissions 0700) and enforcing that POSIX identity.
The instance's task definition mounts only that access point, so its server sees
its own directory at ``DATA_MOUNT`` and nothing above it: no other instance's,
and no other tenant's, data ("Working with Amazon EFS access points", EFS user
guide).

``CreateAccessPoint`` is idempotent on ``ClientToken``: the token is derived from
the service, the file system and the instance, so a retried start (a lost answer,
a crash before the task launched, another replica, a service restart) asks again
with the same token, and EFS answers ``AccessPointAlreadyExists`` naming the
access point made the first time (CreateAccessPoint, "Errors", EFS API
reference). When that answer lacks the id, the file system's access points are
listed and the one with the token is taken.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from chroma_orch.runtimes.base import RuntimeUnavailableError, StartFailedError
from chroma_orch.runtimes.ecs.api import EcsApi
from chroma_orch.runtimes.ecs.settings import EcsSettings
from chroma_orch.runtimes.ecs.tasks import TAG_INSTANCE, TAG_TENANT
from chroma_orch.runtimes.ecs.throttle import error_code
from chroma_orch.runtimes.ecs.throttle import unavailable as _unavailable

log = logging.getLogger(__name__)

_EXISTS = "AccessPointAlreadyExists"
_REJECTED = frozenset(
    {"BadRequest", "FileSystemNotFound", "AccessPointLimitExceeded", "AccessDeniedException"}
)
_AVAILABLE_FIRST_DELAY = 0.25
_AVAILABLE_MAX_DELAY = 2.0
_AVAILABLE_MAX_WAIT = 30.0
"""Backoff while a new access point is ``creating`` (seconds)."""


def access_point_token(settings: EcsSettings, instance_id: str) -> str:
    """CreateAccessPoint's ``ClientToken`` (≤ 64 characters), the same on every
    attempt and every replica for one instance of one deployment."""
    seed = f"{settings.service_name}/{settings.efs_file_system_id}/{instance_id}"
    return hashlib.sha256(seed.encode()).hexdigest()


def root_path(settings: EcsSettings, tenant_id: str, instance_id: str) -> str:
    """The directory of the file system an instance's access point exposes."""
    return f"/{settings.efs_root.strip('/')}/{tenant_id}/{instance_id}"


def access_point_request(settings: EcsSettings, tenant_id: str, instance_id: str) -> dict[str, Any]:
    """CreateAccessPoint parameters for one instance."""
    uid, gid = settings.efs_posix_uid, settings.efs_posix_gid
    tags = settings.tags | {
        "Name": f"{settings.service_name}-{instance_id}",
        TAG_INSTANCE: instance_id,
        TAG_TENANT: tenant_id,
    }
    return {
        "ClientToken": access_point_token(settings, instance_id),
        "FileSystemId": settings.efs_file_system_id,
        "PosixUser": {"Uid": uid, "Gid": gid},
        "RootDirectory": {
            "Path": root_path(settings, tenant_id, instance_id),
            "CreationInfo": {"OwnerUid": uid, "OwnerGid": gid, "Permissions": "0700"},
        },
        "Tags": [{"Key": key, "Value": value} for key, value in sorted(tags.items())],
    }


class AccessPoints:
    """Creates, finds and deletes the instances' access points (ids cached by
    instance: a start after the first costs no EFS call)."""

    def __init__(self, api: EcsApi, settings: EcsSettings) -> None:
        self._api = api
        self._settings = settings
        self._ids: dict[str, str] = {}  # instance id -> access point id
        self._locks: dict[str, asyncio.Lock] = {}

    async def ensure(self, tenant_id: str, instance_id: str) -> str:
        """The instance's access point id, created on first need (idempotently)."""
        known = self._ids.get(instance_id)
        if known is not None:
            return known
        async with self._locks.setdefault(instance_id, asyncio.Lock()):
            if instance_id not in self._ids:
                request = access_point_request(self._settings, tenant_id, instance_id)
                self._ids[instance_id] = await self._create(request)
            return self._ids[instance_id]

    async def find(self, instance_id: str) -> str | None:
        """The instance's access point id, or None when it never got one."""
        known = self._ids.get(instance_id)
        if known is not None:
            return known
        return await self._by_token(access_point_token(self._settings, instance_id))

    async def delete(self, instance_id: str, access_point_id: str) -> None:
        """DeleteAccessPoint (its directory stays: the cleanup task empties it first)."""
        try:
            await self._api.call("DeleteAccessPoint", service="efs", AccessPointId=access_point_id)
        except Exception as exc:
            if error_code(exc) != "AccessPointNotFound":
                raise _unavailable("DeleteAccessPoint", exc) from exc
        self._ids.pop(instance_id, None)
        self._locks.pop(instance_id, None)
        log.info("deleted access point instance=%s access_point=%s", instance_id, access_point_id)

    async def _create(self, request: dict[str, Any]) -> str:
        try:
            created = await self._api.call("CreateAccessPoint", service="efs", **request)
        except Exception as exc:
            if error_code(exc) == _EXISTS:
                return await self._existing(request["ClientToken"], exc)
            if error_code(exc) in _REJECTED:
                raise StartFailedError("AccessPointRejected", str(exc)) from exc
            raise _unavailable("CreateAccessPoint", exc) from exc
        access_point = str(created["AccessPointId"])
        log.info(
            "created access point access_point=%s root=%s",
            access_point,
            request["RootDirectory"]["Path"],
        )
        if created.get("LifeCycleState") != "available":
            await self._until_available(access_point)
        return access_point

    async def _existing(self, token: str, exc: Exception) -> str:
        """The access point an earlier attempt created with ``token``."""
        named = getattr(exc, "response", {}).get("AccessPointId")
        found = str(named) if named else await self._by_token(token)
        if found is None:
            raise RuntimeUnavailableError("CreateAccessPoint: token in use, access point not found")
        log.info("reusing access point access_point=%s (same ClientToken)", found)
        await self._until_available(found)
        return found

    async def _by_token(self, token: str) -> str | None:
        """DescribeAccessPoints of the file system, page by page, for ``token``."""
        params: dict[str, Any] = {
            "FileSystemId": self._settings.efs_file_system_id,
            "MaxResults": 100,
        }
        while True:
            try:
                page = await self._api.call("DescribeAccessPoints", service="efs", **params)
            except Exception as exc:
                raise _unavailable("DescribeAccessPoints", exc) from exc
            for point in page.get("AccessPoints") or []:
                if point.get("ClientToken") == token:
                    return str(point["AccessPointId"])
            if not page.get("NextToken"):
                return None
            params["NextToken"] = page["NextToken"]

    async def _until_available(self, access_point: str) -> None:
        """Wait (with backoff, bounded) while the access point is ``creating``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _AVAILABLE_MAX_WAIT
        delay = _AVAILABLE_FIRST_DELAY
        while True:
            try:
                page = await self._api.call(
                    "DescribeAccessPoints", service="efs", AccessPointId=access_point
                )
            except Exception as exc:
                raise _unavailable("DescribeAccessPoints", exc) from exc
            (point,) = page.get("AccessPoints") or [{}]
            state = point.get("LifeCycleState")
            if state == "available":
                return
            if state not in ("creating", None) or loop.time() >= deadline:
                raise RuntimeUnavailableError(f"access point {access_point} is {state}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, _AVAILABLE_MAX_DELAY)
