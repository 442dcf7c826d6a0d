"""The seed routes keep working for the seed's clients."""

from __future__ import annotations

import httpx

from tests.helpers import bearer, create_tenant


async def test_launch_creates_user_and_instance_then_returns_it(client: httpx.AsyncClient) -> None:
    first = await client.post("/launch", json={"user_id": "alice"})
    assert first.status_code == 202, first.text
    body = first.json()
    assert body["user_id"] == "alice"
    assert body["status"] == "pending"
    assert body["name"] == "default"
    again = await client.post("/launch", json={"user_id": "alice"})
    assert again.status_code == 200
    assert again.json()["id"] == body["id"]
    status = await client.get("/status/alice")
    assert status.status_code == 200
    assert status.json()["status"] == "pending"
    assert "port" in status.json()
    assert "endpoint" in status.json()


async def test_stop_delete_and_unknown_users(client: httpx.AsyncClient) -> None:
    await client.post("/launch", json={"user_id": "bob"})
    stopped = await client.post("/stop/bob")
    assert stopped.status_code == 202
    assert stopped.json()["desired_state"] == "stopped"
    relaunch = await client.post("/launch", json={"user_id": "bob"})
    assert relaunch.status_code == 202
    assert relaunch.json()["desired_state"] == "running"
    deleted = await client.delete("/delete/bob")
    assert deleted.status_code == 202
    assert deleted.json()["desired_state"] == "deleted"
    assert (await client.get("/status/bob")).status_code == 404
    assert (await client.post("/stop/nobody")).status_code == 404
    assert (await client.get("/status/nobody")).json()["code"] == "not_found"


async def test_seed_bad_input(client: httpx.AsyncClient) -> None:
    for body in [{}, {"user_id": ""}, {"user_id": "a b"}, {"user_id": 5}, {"user": "x"}]:
        response = await client.post("/launch", json=body)
        assert response.status_code == 422, body
        assert response.headers["content-type"] == "application/problem+json"
    assert (await client.get("/status/" + "x" * 100)).status_code == 422
    assert (await client.get("/v1/tenants")).json() == []


async def test_tenant_token_uses_seed_routes_for_itself_only(client: httpx.AsyncClient) -> None:
    _, token = await create_tenant(client, "carol")
    await create_tenant(client, "dave")
    mine = await client.post("/launch", json={"user_id": "carol"}, headers=bearer(token))
    assert mine.status_code == 202
    other = await client.post("/launch", json={"user_id": "dave"}, headers=bearer(token))
    assert other.status_code == 404
    new_user = await client.post("/launch", json={"user_id": "erin"}, headers=bearer(token))
    assert new_user.status_code == 404
    assert (await client.get("/status/dave", headers=bearer(token))).status_code == 404
