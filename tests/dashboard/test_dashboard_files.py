"""What the app serves under /dashboard: the page and its assets only, each with
headers that keep it from being framed or fed content from elsewhere."""

from __future__ import annotations

import httpx
import pytest

PAGE_AND_ASSETS = {
    "/dashboard/": "text/html",
    "/dashboard/index.html": "text/html",
    "/dashboard/app.js": "javascript",
    "/dashboard/snapshots.js": "javascript",
    "/dashboard/rollouts.js": "javascript",
    "/dashboard/upgrades.js": "javascript",
    "/dashboard/paging.js": "javascript",
    "/dashboard/fleet.js": "javascript",
    "/dashboard/style.css": "text/css",
}


@pytest.mark.parametrize(("path", "kind"), PAGE_AND_ASSETS.items())
async def test_the_page_and_its_assets_carry_restrictive_headers(
    client: httpx.AsyncClient, path: str, kind: str
) -> None:
    response = await client.get(path, headers={"Host": "dash.example:8443"})
    assert response.status_code == 200
    assert kind in response.headers["content-type"]
    policy = {
        directive.split()[0]: directive.split()[1:]
        for directive in response.headers["content-security-policy"].split("; ")
    }
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]  # no inline script, no eval
    assert policy["style-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'", "ws://dash.example:8443", "wss://dash.example:8443"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


async def test_a_host_header_cannot_write_the_policy(client: httpx.AsyncClient) -> None:
    response = await client.get("/dashboard/", headers={"Host": "evil.example; script-src *"})
    policy = response.headers["content-security-policy"]
    assert "evil" not in policy
    assert "connect-src 'self';" in policy


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/__init__.py",
        "/dashboard/%5F%5Finit__.py",
        "/dashboard/__pycache__/",
        "/dashboard/nothing.html",
        "/dashboard/../dashboard/__init__.py",
    ],
)
async def test_nothing_else_of_the_package_is_served(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert "DASHBOARD_DIR" not in response.text
