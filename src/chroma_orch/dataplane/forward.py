"""Streams one request to an instance's server and its response back.

Bodies are never read whole: the request body is passed to httpx as the
client sends it (with its Content-Length, or chunked), and the response is
relayed chunk by chunk as raw bytes (compressed bodies stay compressed).
Connections to the servers come from one pooled ``httpx.AsyncClient``. A
request body that pauses too long, or takes too long in all, is cut (408).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Iterable

import httpx
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from chroma_orch.dataplane.access import TOKEN_HEADER, Route
from chroma_orch.errors import AppError
from chroma_orch.settings import ProxySettings

log = logging.getLogger(__name__)

# RFC 9110 §7.6.1 connection-specific fields, plus the non-standard ones still seen.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_NOT_FORWARDED = HOP_BY_HOP | {b"host", b"authorization", TOKEN_HEADER.encode()}
# The HTTP server adds its own Date and Server to every answer; relaying the
# upstream's too would send each twice (Nginx drops them the same way).
_NOT_RELAYED = HOP_BY_HOP | {b"date", b"server"}
_CLIENT_DEFAULTS = ("Accept", "Accept-Encoding", "User-Agent")


class UpstreamError(AppError):
    status, code, title = 502, "upstream_failed", "The instance's server failed to answer"


class UpstreamTimeoutError(AppError):
    status, code, title = 504, "upstream_timeout", "The instance's server did not answer in time"


class RequestBodyTimeoutError(AppError):
    status, code, title = 408, "body_timeout", "The request body did not arrive in time"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Connection": "close"})


class ClientGoneError(Exception):
    """The client closed its connection before its request body was complete."""


class ProxyBusyError(AppError):
    status, code, title = 503, "proxy_busy", "Too many requests in flight to instance servers"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Retry-After": "1"})


def filter_headers(
    raw: Iterable[tuple[bytes, bytes]], drop: frozenset[bytes]
) -> list[tuple[bytes, bytes]]:
    """``raw`` without the ``drop`` fields and without any field the ``Connection``
    header names (header names are lower-case in ASGI and httpx raw headers)."""
    headers = [(name.lower(), value) for name, value in raw]
    named = {
        token.strip().lower()
        for name, value in headers
        if name == b"connection"
        for token in value.split(b",")
    }
    return [(name, value) for name, value in headers if name not in drop and name not in named]


def _has_body(request: Request) -> bool:
    return "transfer-encoding" in request.headers or request.headers.get(
        "content-length", "0"
    ) not in ("", "0")


async def _body(request: Request, idle: float, total: float) -> AsyncIterator[bytes]:
    """The client's body as it arrives; ``RequestBodyTimeoutError`` after ``idle``
    seconds without a chunk or ``total`` seconds in all, ``ClientGoneError`` if the
    client hangs up first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total
    chunks = request.stream()
    while True:
        wait = min(idle, deadline - loop.time())
        try:
            async with asyncio.timeout(wait):
                chunk = await anext(chunks, None)
        except TimeoutError:
            late = wait < idle
            raise RequestBodyTimeoutError(
                f"the request body took longer than {total:g}s"
                if late
                else f"no request body bytes for {idle:g}s"
            ) from None
        except ClientDisconnect:
            raise ClientGoneError from None
        if chunk is None:
            return
        if chunk:
            yield chunk


@functools.cache
def upstream_tls() -> ssl.SSLContext:
    """The TLS context of upstream connections: httpx's default (certifi's CAs, host
    names checked), built once per process, as loading the CAs takes ~40 ms a time."""
    return httpx.create_ssl_context(trust_env=False)


class Forwarder:
    def __init__(self, settings: ProxySettings) -> None:
        self.client = httpx.AsyncClient(
            verify=upstream_tls(),
            limits=httpx.Limits(
                max_connections=settings.max_connections,
                max_keepalive_connections=settings.max_keepalive_connections,
                keepalive_expiry=settings.keepalive_expiry,
            ),
            timeout=httpx.Timeout(
                connect=settings.connect_timeout,
                read=settings.read_timeout,
                write=settings.read_timeout,
                pool=settings.connect_timeout,
            ),
            follow_redirects=False,
            trust_env=False,  # never route tenant traffic through an environment proxy
        )
        self.body_idle_timeout = settings.body_idle_timeout
        self.body_timeout = settings.body_timeout
        for name in _CLIENT_DEFAULTS:  # forward only what the client sent
            del self.client.headers[name]

    async def aclose(self) -> None:
        await self.client.aclose()

    def build(self, route: Route, request: Request, prefix_len: int) -> httpx.Request:
        """The upstream request: same method, path after ``/i/{id}``, query and
        headers minus hop-by-hop ones and the caller's credentials."""
        scope = request.scope
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        target = raw_path[prefix_len:] or b"/"
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        headers = filter_headers(scope["headers"], _NOT_FORWARDED)
        client = scope.get("client")
        if client:
            headers.append((b"x-forwarded-for", client[0].encode()))
        assert route.address is not None
        return httpx.Request(
            request.method,
            httpx.URL(f"http://{route.address}").copy_with(raw_path=target),
            headers=headers,
            content=(
                _body(request, self.body_idle_timeout, self.body_timeout)
                if _has_body(request)
                else None
            ),
        )

    async def send(self, upstream: httpx.Request) -> httpx.Response:
        """Send and return once the response headers arrived; the body streams later.

        ``httpx.ConnectError`` propagates (nothing was sent, the caller may retry
        elsewhere); other failures become problem responses.
        """
        try:
            return await self.client.send(upstream, stream=True)
        except httpx.ConnectError:
            raise
        except httpx.PoolTimeout as exc:
            raise ProxyBusyError("no upstream connection became free in time") from exc
        except httpx.ConnectTimeout as exc:
            raise UpstreamError("connecting to the instance's server timed out") from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeoutError(f"{type(exc).__name__} from the server") from exc
        except httpx.TransportError as exc:
            raise UpstreamError(f"{type(exc).__name__}: {exc}") from exc


class UpstreamResponse(Response):
    """Relays an upstream response as it arrives; always releases the connection
    (and then calls ``on_close``).

    A failure after the status line was sent cannot become a 502 any more: the
    client connection is aborted (never ended cleanly), so a truncated body is
    never mistaken for a complete one. A client that hangs up stops the relay at
    once (one INFO line), so its upstream connection and share are not held until
    the server has finished.
    """

    def __init__(self, upstream: httpx.Response) -> None:
        self.upstream = upstream
        self.status_code = upstream.status_code
        self.background = None
        self.raw_headers = filter_headers(upstream.headers.raw, _NOT_RELAYED)
        self.on_close: Callable[[], None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        relay = asyncio.create_task(self._relay(send))
        gone = asyncio.create_task(_disconnected(receive))
        try:
            await asyncio.wait((relay, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (gone, relay):
                task.cancel()
            await asyncio.gather(gone, relay, return_exceptions=True)
            try:
                await self.upstream.aclose()
            finally:
                if self.on_close is not None:
                    self.on_close()
        if relay.cancelled():
            log.info("client closed the connection mid-response url=%s", self._url)
        else:
            relay.result()  # re-raises a failure of the upstream

    @property
    def _url(self) -> httpx.URL:
        return self.upstream.request.url.copy_with(query=None)

    async def _relay(self, send: Send) -> None:
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            async for chunk in self.upstream.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except httpx.TransportError as exc:
            log.warning(
                "upstream failed mid-response url=%s error=%s", self._url, type(exc).__name__
            )
            raise


async def _disconnected(receive: Receive) -> None:
    """Returns once the client is gone (or the response is complete)."""
    while (await receive())["type"] != "http.disconnect":
        pass
