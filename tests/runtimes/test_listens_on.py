"""listens_on: only a listening socket of that very process counts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import psutil

from chroma_orch.runtimes.local.launch import listens_on


def test_own_listening_socket_counts_connections_and_others_do_not() -> None:
    me = psutil.Process(os.getpid())
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        assert not listens_on(me, port)  # bound, not listening yet
        server.listen()
        assert listens_on(me, port)
        with socket.create_connection(("127.0.0.1", port)):
            assert not listens_on(me, port + 1 if port < 65535 else port - 1)
    assert not listens_on(me, port)  # closed


def test_another_process_listening_is_not_this_one() -> None:
    code = "import socket,sys,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); "
    code += "print(s.getsockname()[1], flush=True); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        assert listens_on(psutil.Process(child.pid), port)
        assert not listens_on(psutil.Process(os.getpid()), port)
    finally:
        child.kill()
        child.wait()
