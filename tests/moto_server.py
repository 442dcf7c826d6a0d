"""moto's server (AWS stand-in over real HTTP) as a session fixture, shared by the
test packages that talk to AWS (tests/ecs, tests/snapshots): a conftest offers it
with ``moto_url = pytest.fixture(scope="session")(run_moto_server)``."""

from __future__ import annotations

from collections.abc import Iterator

from moto.server import ThreadedMotoServer


def run_moto_server() -> Iterator[str]:
    """Start moto's server on a free loopback port; yields its URL, stops it after."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
