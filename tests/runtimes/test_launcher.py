"""The launcher is a real file of the installed package, run by path, importing only
the standard library's few modules it needs (it runs as root, before dropping it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import chroma_orch
from chroma_orch.runtimes.local.launch import LAUNCHER, ServerLaunch, read_lock, server_command
from chroma_orch.settings import LocalRuntimeSettings

NEEDED = "import fcntl, json, os, resource, sys, time, warnings"
"""What the launcher needs (``warnings``: ``os.execvp`` imports it)."""


def test_servers_run_the_packaged_launcher_file_by_path(tmp_path: Path) -> None:
    argv = server_command(
        LocalRuntimeSettings(), tmp_path / "d", tmp_path / "d.lock", "127.0.0.1", 8000
    )
    assert argv[1:3] == ["-I", LAUNCHER]
    assert "-c" not in argv
    assert "-m" not in argv
    launcher = Path(LAUNCHER)
    assert launcher.is_file()
    assert launcher.is_absolute()
    assert launcher.is_relative_to(Path(chroma_orch.__file__).parent)


def _imported(argv: list[str]) -> set[str]:
    """Modules the interpreter imports running ``argv`` (``-X importtime``'s lines)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, check=True
    )
    lines = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[1].strip() for line in lines[1:]}


def test_the_launcher_imports_only_what_it_needs(tmp_path: Path) -> None:
    lock = tmp_path / "d.lock"
    argv = server_command(LocalRuntimeSettings(), tmp_path / "d", lock, "127.0.0.1", 8123)
    launched = _imported([*argv[1:], "true"])  # execs `true` after taking the lock
    assert launched - _imported(["-I", "-c", NEEDED]) == set()
    assert not any(name.startswith("chroma_orch") for name in launched)
    record = read_lock(lock)  # it did take the lock and write its record
    assert record is not None
    assert (record.host, record.port) == ("127.0.0.1", 8123)


def test_a_chroma_cli_server_with_settings_runs_its_config_file(tmp_path: Path) -> None:
    settings = LocalRuntimeSettings(launcher="chroma-cli", chroma_command="/opt/chroma")
    config = tmp_path / "d.chroma-config.yaml"
    launch = ServerLaunch("/opt/py", "/opt/chroma-1.5.8", "1.5.8", memory_mib=256, config=config)
    argv = server_command(settings, tmp_path / "d", tmp_path / "d.lock", "::1", 8000, None, launch)
    assert argv[0] == "/opt/py"
    assert argv[-6:] == ["256", str(config), "1.5.8", "/opt/chroma-1.5.8", "run", str(config)]
    assert "--path" not in argv  # chroma run takes a config file or flags, never both
