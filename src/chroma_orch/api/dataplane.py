"""The data plane: /i/{instance_id}/... to the tenant's own Chroma server.

``/i/{instance_id}/{path}`` is the built-in proxy (what ``InstanceRead.url``
points at): ``chromadb.HttpClient(host=url, headers={"Authorization": "Bearer
<token>"})`` works through it as is. ``/internal/dataplane/auth`` answers
Nginx's ``auth_request`` with the server's address in ``X-Chroma-Upstream``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from chroma_orch.api.deps import client_address
from chroma_orch.api.problems import problem_responses
from chroma_orch.dataplane import get_dataplane
from chroma_orch.dataplane.access import InstanceNotRunningError, credential, parse_instance_id
from chroma_orch.dataplane.forward import (
    ProxyBusyError,
    RequestBodyTimeoutError,
    UpstreamError,
    UpstreamTimeoutError,
)
from chroma_orch.dataplane.shares import (
    InstanceBusyError,
    TenantBusyError,
    TenantRateLimitedError,
)
from chroma_orch.errors import (
    ForbiddenError,
    NotFoundError,
    UnauthorizedError,
)
from chroma_orch.settings import NGINX_AUTH_CACHE_SECONDS, NGINX_AUTH_STALE_SECONDS
from chroma_orch.telemetry.metrics import PROXIED_REQUESTS

router = APIRouter(tags=["data plane"])

UPSTREAM_HEADER = "X-Chroma-Upstream"
INSTANCE_HEADER = "X-Chroma-Instance"
# Nginx keeps an authorisation NGINX_AUTH_CACHE_SECONDS, and may use it
# NGINX_AUTH_STALE_SECONDS longer while no replica answers (an error or timeout
# from every one; Nginx >= 1.19.2 never serves it stale for an HTTP answer).
AUTH_CACHE_CONTROL = (
    f"max-age={NGINX_AUTH_CACHE_SECONDS}, stale-if-error={NGINX_AUTH_STALE_SECONDS}"
)
_DENIALS = problem_responses(
    UnauthorizedError, ForbiddenError, NotFoundError, InstanceNotRunningError
)
_PROXY_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
_PROXY_DESCRIPTION = """\
Forwards the request to the instance's own Chroma server: the path after
`/i/{instance_id}`, the query, the body (streamed both ways) and the headers,
minus hop-by-hop ones and the credentials. Needs the instance's tenant token
or an admin token as `Authorization: Bearer` or `X-Chroma-Token`. Answers 404
for another tenant's instance, 503 with `Retry-After` while the instance is not
running, 502/504 when its server fails or times out before answering, 408 when
the request body stalls or takes too long, 429 with `Retry-After` beyond the
tenant's request rate or its share of requests in flight (per instance and per
tenant).
"""


async def proxy(instance_id: str, path: str, request: Request) -> Response:
    plane = get_dataplane(request.app)
    if not plane.enabled:
        raise NotFoundError("the built-in proxy is disabled (CHROMA_ORCH_PROXY__ENABLED)")
    route = await plane.authorize(
        credential(request.headers),
        parse_instance_id(instance_id),
        client=client_address(request),
    )
    raw_path: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    prefix_len = raw_path.find(b"/", len(b"/i/"))
    if prefix_len < 0:  # the separator was percent-encoded (/i/<id>%2F...)
        raise NotFoundError("no instance path: /i/{instance_id}/...")
    response = await plane.forward(route, request, prefix_len)
    PROXIED_REQUESTS.labels(f"{response.status_code // 100}xx").inc()
    return response


for _method in _PROXY_METHODS:
    router.add_api_route(
        "/i/{instance_id}/{path:path}",
        proxy,
        methods=[_method],
        operation_id=f"proxy{_method.title()}",
        summary="Chroma API of an instance (built-in proxy)",
        description=_PROXY_DESCRIPTION,
        include_in_schema=_method in ("GET", "POST", "PUT", "DELETE"),
        responses={
            **_DENIALS,
            **problem_responses(
                UpstreamError,
                UpstreamTimeoutError,
                ProxyBusyError,
                RequestBodyTimeoutError,
                TenantRateLimitedError,
                InstanceBusyError,
                TenantBusyError,
            ),
        },
    )


@router.get("/internal/dataplane/auth", include_in_schema=False)
async def nginx_auth(request: Request) -> Response:
    """For Nginx's ``auth_request``: 200 with ``X-Chroma-Upstream: host:port`` when
    the caller's token may reach the instance named by ``X-Chroma-Instance`` (or
    by the ``/i/{id}/`` path in ``X-Original-URI``); else the problem (401, 403,
    404, 503) the built-in proxy would answer."""
    plane = get_dataplane(request.app)
    instance = request.headers.get(INSTANCE_HEADER) or _instance_in_uri(
        request.headers.get("x-original-uri", "")
    )
    # No waking here: Nginx hands a 503 to the built-in proxy, which wakes and holds.
    route = await plane.authorize(
        credential(request.headers),
        parse_instance_id(instance),
        wake=False,
        client=client_address(request),
    )
    assert route.address is not None
    return Response(
        status_code=200,
        headers={
            UPSTREAM_HEADER: route.address,
            INSTANCE_HEADER: str(route.instance_id),
            "Cache-Control": AUTH_CACHE_CONTROL,
        },
    )


def _instance_in_uri(uri: str) -> str:
    parts = uri.split("?", 1)[0].split("/")
    return parts[2] if len(parts) > 2 and parts[0] == "" and parts[1] == "i" else ""
