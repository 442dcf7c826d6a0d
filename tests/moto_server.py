"""moto's server (AWS stand-in over real HTTP) as a session fixture, shared by the
test packages that talk to AWS (tests/ecs, tests/snapshots): a conftest offers it
with ``moto_url = pytest.fixture(scope="session")(run_moto_server)``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

REGION = "us-east-1"


def run_moto_server() -> Iterator[str]:
    """Start moto's server on a free loopback port; yields its URL, stops it after.

    Without moto's stock public AMIs: each brings an EBS snapshot, and moto filters
    ``DescribeSnapshots`` by tag over every snapshot it holds, reading all the
    region's tags for each. The ECS runtime asks for an instance's snapshots on each
    start, so 250 starts spent ~50 CPU-seconds in moto filtering images no test uses
    (an account's ``OwnerIds=["self"]`` never sees them in AWS either)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


def fake_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Credentials moto accepts, and no AWS configuration of the machine's."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
