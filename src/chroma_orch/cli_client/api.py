"""A small synchronous client for the /v1 API that turns every failure into a
``CliError`` with the right exit code and the problem's ``detail``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from chroma_orch.cli_client.exits import AUTH, SERVER_ERROR, UNREACHABLE, CliError
from chroma_orch.cli_client.exits import exit_code_for_status as _exit_code

DEFAULT_URL = "http://127.0.0.1:8080"
REQUEST_TIMEOUT = 30.0


def problem_message(response: httpx.Response) -> str:
    """``detail`` (else ``title``) of a problem+json answer, else the raw text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        text = body.get("detail") or body.get("title")
        if text:
            code = body.get("code")
            return f"{text} ({code}, HTTP {response.status_code})" if code else str(text)
    raw = response.text.strip()[:300] or response.reason_phrase
    return f"HTTP {response.status_code}: {raw}"


class Api:
    """The service at ``url``, called with ``token``. Use as a context manager."""

    def __init__(self, url: str, token: str | None, *, streams: bool = True) -> None:
        if not token:
            raise CliError(AUTH, "no token: set CHROMA_ORCH_TOKEN or pass --token-file")
        self.url = url.rstrip("/")
        self.token = token
        self.streams = streams
        """Whether to use the service's WebSockets (else HTTP polling only)."""
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "chroma-orch-cli"},
            timeout=httpx.Timeout(REQUEST_TIMEOUT, connect=5.0),
        )

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def call(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> Any:
        """The decoded JSON answer of a 2xx response; raises ``CliError`` otherwise."""
        if timeout is not None:
            kwargs["timeout"] = httpx.Timeout(timeout, connect=5.0)
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise CliError(UNREACHABLE, f"{self.url} did not answer in time ({exc})") from exc
        except httpx.TransportError as exc:
            raise CliError(UNREACHABLE, f"cannot reach {self.url}: {exc}") from exc
        if response.is_success:
            return self._json(response)
        message = problem_message(response)
        retry_after = response.headers.get("Retry-After")
        if retry_after:
            message += f"; retry after {retry_after}s"
        raise CliError(_exit_code(response.status_code), message)

    @contextmanager
    def download(self, path: str) -> Iterator[httpx.Response]:
        """A streamed 2xx answer (read it with ``iter_bytes``); ``CliError`` otherwise."""
        try:
            with self._http.stream("GET", path, timeout=httpx.Timeout(None, connect=5.0)) as got:
                if not got.is_success:
                    got.read()
                    raise CliError(_exit_code(got.status_code), problem_message(got))
                yield got
        except httpx.TransportError as exc:
            raise CliError(UNREACHABLE, f"cannot reach {self.url}: {exc}") from exc

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code == 204:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise CliError(
                SERVER_ERROR, f"unexpected answer from {self.url}: {response.text[:200]}"
            ) from exc

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.call("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Any:
        return self.call("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Any:
        return self.call("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.call("DELETE", path, **kwargs)
