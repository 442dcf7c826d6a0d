"""A shared simulated cloud (``python -m chroma_orch.runtimes.sim.cloud_server``) as
a child process for a test, on a free port, its clock compressed 1000 times."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from chroma_orch.runtimes.sim.settings import SimRuntimeSettings
from tests.conftest import port_window

CLOUD_ENV = {
    "CHROMA_ORCH_SIM__TIME_SCALE": "0.001",
    "CHROMA_ORCH_SIM__START_FAILURE_RATE": "0",
    "CHROMA_ORCH_SIM__STOP_AFTER": "0.05",
}


@dataclass
class CloudProcess:
    process: subprocess.Popen[str]
    url: str

    def replica(self, **settings: object) -> SimRuntimeSettings:
        """A replica's settings for this cloud: on its clock, as a replica is given the
        cloud's ``CHROMA_ORCH_SIM__TIME_SCALE`` (it paces how often a start is
        checked: at the default scale, once a second)."""
        scale = float(CLOUD_ENV["CHROMA_ORCH_SIM__TIME_SCALE"])
        return SimRuntimeSettings.model_validate(
            {"cloud_url": self.url, "time_scale": scale, **settings}
        )


@contextlib.contextmanager
def cloud_process(**env: str) -> Iterator[CloudProcess]:
    """The cloud, its settings ``CLOUD_ENV`` updated by ``env``; killed afterwards."""
    process = subprocess.Popen(
        [sys.executable, "-m", "chroma_orch.runtimes.sim.cloud_server", "--port", "0"],
        stdout=subprocess.PIPE,
        env={**os.environ, **CLOUD_ENV, "CHROMA_ORCH_SIM__PORT_RANGE": port_window(), **env},
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "" if it died
        assert line.startswith("listening on "), f"the cloud did not start: {line!r}"
        yield CloudProcess(process, line.removeprefix("listening on ").strip())
    finally:
        process.kill()
        process.wait()
