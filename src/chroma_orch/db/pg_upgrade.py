"""Upgrading an embedded cluster in place to its binaries' major version, with pg_upgrade.

pg_upgrade (copy mode: the old directory is only read) writes the new cluster beside the
old one, in ``data.upgrading``; once it succeeded that is renamed ``data.upgraded``. Then
``data`` is renamed ``data.pg<old major>-<UTC time>``, kept (the service never deletes it),
and ``data.upgraded`` becomes ``data``. Every step is a rename, so the next start redoes an
upgrade that was interrupted before it completed and finishes one interrupted after.
Callers hold the cluster's lock.
"""

from __future__ import annotations

import logging
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from subprocess import CompletedProcess
from typing import Protocol

from chroma_orch.db.pg_host import PORT, EmbeddedDatabaseError, is_executable

logger = logging.getLogger(__name__)

STAGING = "data.upgrading"
UPGRADED = "data.upgraded"
UPGRADE_TIMEOUT = 3600.0


class Cluster(Protocol):
    """What an upgrade needs of the embedded cluster it upgrades
    (``chroma_orch.db.embedded.EmbeddedPostgres``, which imports this module)."""

    @property
    def cluster_dir(self) -> Path: ...
    @property
    def data_dir(self) -> Path: ...
    @property
    def bin_dir(self) -> Path:
        """The binaries of the major version the cluster is upgraded to."""

    @property
    def socket_dir(self) -> Path: ...

    def run_tool(self, args: list[str], *, timeout: float = ...) -> CompletedProcess[str]:
        """Run one of PostgreSQL's programs as the cluster's system user."""

    def tool_failure(self, what: str, proc: CompletedProcess[str]) -> EmbeddedDatabaseError:
        """The error to raise when ``proc`` (``what``) failed."""

    def initdb_at(self, target: Path, *extra: str) -> None:
        """A new data directory at ``target``, with the cluster's own binaries."""

    def postmaster_running(self) -> bool: ...

    def shut_down_with(self, bin_dir: Path) -> None:
        """Stop the cluster cleanly with ``bin_dir``'s binaries (recovering it first)."""


class MajorUpgrade:
    """Upgrade ``cluster``'s PostgreSQL ``old_major`` data directory with ``old_bin``'s
    binaries to the cluster's own (``new_major``)."""

    def __init__(self, cluster: Cluster, old_bin: Path, old_major: str, new_major: str) -> None:
        self.cluster = cluster
        self.old_bin = old_bin
        self.old_major = old_major
        self.new_major = new_major

    def run(self) -> None:
        cluster = self.cluster
        logger.warning(
            "upgrading embedded PostgreSQL cluster from %s to %s with pg_upgrade "
            "data_dir=%s old_bin_dir=%s new_bin_dir=%s",
            self.old_major, self.new_major, cluster.data_dir, self.old_bin, cluster.bin_dir,
        )  # fmt: skip
        started = time.monotonic()
        needed = ((cluster.bin_dir, "pg_upgrade"), (self.old_bin, "pg_controldata"))
        for directory, name in needed:
            if not is_executable(directory / name):
                raise EmbeddedDatabaseError(
                    f"cannot upgrade {cluster.data_dir}: no {name} in {directory}; "
                    "the cluster is left untouched"
                )
        checksums = self._shut_down_cleanly()
        staging = cluster.cluster_dir / STAGING
        cluster.initdb_at(staging, *([] if checksums else ["--no-data-checksums"]))
        proc = cluster.run_tool(
            [
                str(cluster.bin_dir / "pg_upgrade"), "-b", str(self.old_bin),
                "-B", str(cluster.bin_dir), "-d", str(cluster.data_dir), "-D", str(staging),
                "-U", "postgres", "-s", str(cluster.socket_dir), "-p", str(PORT), "-P", str(PORT),
            ],
            timeout=UPGRADE_TIMEOUT,
        )  # fmt: skip
        if proc.returncode != 0:
            output = (proc.stdout + proc.stderr).strip()[-3000:]
            raise EmbeddedDatabaseError(
                f"pg_upgrade of {cluster.data_dir} from PostgreSQL {self.old_major} to "
                f"{self.new_major} failed (exit {proc.returncode}); the old cluster is left "
                f"untouched, pg_upgrade's logs are under {staging}:\n{output}"
            )
        os.rename(staging, cluster.cluster_dir / UPGRADED)
        finish_interrupted_upgrade(cluster)
        logger.warning(
            "upgraded embedded PostgreSQL cluster to %s data_dir=%s seconds=%.1f",
            self.new_major, cluster.data_dir, time.monotonic() - started,
        )  # fmt: skip

    def _shut_down_cleanly(self) -> bool:
        """Stop the old cluster (recovering it first after a crash); True when it has
        data checksums (the new cluster must match)."""
        state = self._control_data()
        if self.cluster.postmaster_running() or state["cluster state"] != "shut down":
            logger.info("shutting PostgreSQL %s down cleanly before pg_upgrade", self.old_major)
            self.cluster.shut_down_with(self.old_bin)
            state = self._control_data()
        return state["checksum version"] not in ("", "0")

    def _control_data(self) -> dict[str, str]:
        proc = self.cluster.run_tool(
            [str(self.old_bin / "pg_controldata"), str(self.cluster.data_dir)]
        )
        if proc.returncode != 0:
            raise self.cluster.tool_failure("pg_controldata", proc)
        fields = dict(re.findall(r"^([^:\n]+):\s*(.*)$", proc.stdout, re.MULTILINE))
        return {
            "cluster state": fields.get("Database cluster state", "").strip(),
            "checksum version": fields.get("Data page checksum version", "").strip(),
        }


def finish_interrupted_upgrade(cluster: Cluster) -> None:
    """Put a completed upgrade (``data.upgraded``) in place, keeping the old directory."""
    upgraded = cluster.cluster_dir / UPGRADED
    if not upgraded.is_dir():
        return
    data = cluster.data_dir
    if data.exists():
        old_major = (data / "PG_VERSION").read_text().strip()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        kept = cluster.cluster_dir / f"data.pg{old_major}-{stamp}"
        os.rename(data, kept)
        logger.warning(
            "kept the PostgreSQL %s data directory as %s: delete it once the upgraded "
            "cluster is verified",
            old_major, kept,
        )  # fmt: skip
    os.rename(upgraded, data)
