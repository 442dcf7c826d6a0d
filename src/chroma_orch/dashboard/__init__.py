"""The dashboard: a static page (HTML, CSS, JavaScript; no build step, nothing
loaded from elsewhere) that drives the REST API and follows /v1/events."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

DASHBOARD_DIR = Path(__file__).parent


def mount(app: FastAPI, path: str = "/dashboard") -> None:
    """Serve the dashboard at ``path`` (``path + "/"`` is the page)."""
    app.mount(path, StaticFiles(directory=DASHBOARD_DIR, html=True), name="dashboard")
