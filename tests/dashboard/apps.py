"""The service's app with the dashboard mounted, for the browser tests."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from chroma_orch import dashboard
from chroma_orch.app import create_app
from chroma_orch.settings import ReconcilerSettings
from tests.conftest import make_settings


def quiet_dashboard_app(database_url: str, data_dir: Path) -> FastAPI:
    """The app and its dashboard with no reconciler: nothing acts on what a test
    writes (rows inserted straight into the database stay as they are)."""
    settings = make_settings(database_url, data_dir, reconciler=ReconcilerSettings(enabled=False))
    app = create_app(settings)
    dashboard.mount(app)
    return app
