"""CI smoke test of `make serve` on one Python: the service comes up on the embedded
database, an instance is launched and a Chroma client round trip goes through it.

    python .ci/smoke_serve.py PYTHON VENV     (run from the repository root)
Exit status 0 on success; the service's output is printed on failure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import chromadb
import httpx

TOKEN = "co_smoke-admin-token-" + uuid.uuid4().hex
DEADLINE = 240.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(what: str, check: object, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"smoke test: timed out waiting for {what}")


def round_trip(base: str) -> None:
    admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    tenant = admin.post("/v1/tenants", json={"name": "smoke"}).raise_for_status().json()
    token = admin.post(f"/v1/tenants/{tenant['id']}/tokens", json={"name": "t"})
    tenant_token = token.raise_for_status().json()["token"]
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {tenant_token}"})
    body = client.post("/v1/instances", json={"name": "main"}).raise_for_status().json()
    instance_id = body["instance"]["id"]
    end = time.monotonic() + DEADLINE
    wait_until("the instance to run", lambda: client.get(
        f"/v1/instances/{instance_id}").json()["phase"] == "running", end)  # fmt: skip
    url = client.get(f"/v1/instances/{instance_id}").json()["url"]
    chroma = chromadb.HttpClient(host=url, headers={"Authorization": f"Bearer {tenant_token}"})
    collection = chroma.create_collection("smoke")
    collection.add(ids=["a"], documents=["hello"], embeddings=[[0.1, 0.2, 0.3]])
    got = collection.get(ids=["a"])
    assert got["documents"] == ["hello"], got
    print(f"smoke test: instance {instance_id} served a Chroma round trip at {url}")  # noqa: T201
    # Its Chroma server outlives the service by design (a restart of the control plane is
    # no outage for tenants); deleted, it is stopped and its data removed before we go.
    client.delete(f"/v1/instances/{instance_id}").raise_for_status()
    wait_until("the instance to be deleted", lambda: gone(client, instance_id), end)


def gone(client: httpx.Client, instance_id: str) -> bool:
    answer = client.get(f"/v1/instances/{instance_id}")
    return answer.status_code == 404 or answer.json()["phase"] == "deleted"


def main() -> int:
    python, venv = sys.argv[1], sys.argv[2]
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="chroma-orch-smoke-", dir="/tmp")
    os.chmod(data_dir, 0o711)
    env = {**os.environ, "CHROMA_ORCH_DATA_DIR": data_dir, "CHROMA_ORCH_PORT": str(port),
           "CHROMA_ORCH_ADMIN_TOKEN": TOKEN}  # fmt: skip
    env.pop("CHROMA_ORCH_DATABASE_URL", None)
    log = tempfile.TemporaryFile()
    service = subprocess.Popen(
        ["make", "--no-print-directory", "serve", f"PYTHON={python}", f"VENV={venv}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + DEADLINE
        wait_until("the service to be ready", lambda: service.poll() is None and httpx.get(
            f"{base}/readyz", timeout=5).status_code == 200, end)  # fmt: skip
        round_trip(base)
        return 0
    except BaseException:
        log.seek(0)
        sys.stderr.write(log.read().decode(errors="replace")[-8000:])
        raise
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        try:
            service.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
        subprocess.run(["rm", "-rf", data_dir], check=False)


if __name__ == "__main__":
    sys.exit(main())
