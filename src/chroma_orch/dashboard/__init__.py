"""The dashboard: a static page (HTML, CSS, JavaScript; no build step, nothing
loaded from elsewhere) that drives the REST API and follows /v1/events.

Only the page and its assets are served (the package's other files are not),
each with a Content-Security-Policy that allows nothing but this origin (no
inline script or style, which the page does not use) and no framing."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Scope

DASHBOARD_DIR = Path(__file__).parent
ASSETS = frozenset(
    {
        ".",
        "index.html",
        "app.js",
        "snapshots.js",
        "rollouts.js",
        "upgrades.js",
        "paging.js",
        "fleet.js",
        "style.css",
    }
)  # "." is the page
_HOST = re.compile(r"[A-Za-z0-9.:\[\]-]{1,255}")


def security_headers(host: str | None) -> dict[str, str]:
    """Headers of every dashboard file. WebSockets to this host are named
    explicitly: not every browser counts ws:/wss: of the page's host as 'self'."""
    sockets = f" ws://{host} wss://{host}" if host and _HOST.fullmatch(host) else ""
    policy = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"connect-src 'self'{sockets}; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


class DashboardFiles(StaticFiles):
    """The page and its assets, nothing else of the directory (404)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path not in ASSETS:
            raise HTTPException(status_code=404)
        response = await super().get_response(path, scope)
        response.headers.update(security_headers(Headers(scope=scope).get("host")))
        return response


def mount(app: FastAPI, path: str = "/dashboard") -> None:
    """Serve the dashboard at ``path`` (``path + "/"`` is the page)."""
    app.mount(path, DashboardFiles(directory=DASHBOARD_DIR, html=True), name="dashboard")
