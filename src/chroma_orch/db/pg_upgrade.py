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
from typing import TYPE_CHECKING

from chroma_orch.db.pg_host import PORT, EmbeddedDatabaseError, is_executable

if TYPE_CHECKING:
    from chroma_orch.db.embedded import EmbeddedPostgres

logger = logging.getLogger(__name__)

STAGING = "data.upgrading"
UPGRADED = "data.upgraded"
UPGRADE_TIMEOUT = 3600.0


class MajorUpgrade:
    """Upgrade ``cluster``'s PostgreSQL ``old_major`` data directory with ``old_bin``'s
    binaries to the cluster's own (``new_major``)."""

    def __init__(
        self, cluster: EmbeddedPostgres, old_bin: Path, old_major: str, new_major: str
    ) -> None:
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
        cluster._initdb_at(staging, *([] if checksums else ["--no-data-checksums"]))
        proc = cluster._run(
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
        from chroma_orch.db.embedded import EmbeddedPostgres

        old = EmbeddedPostgres(
            self.cluster.cluster_dir, bin_dir=self.old_bin, system_user=self.cluster.system_user
        )
        state = self._control_data()
        if old._running_postmaster() is not None or state["cluster state"] != "shut down":
            logger.info("shutting PostgreSQL %s down cleanly before pg_upgrade", self.old_major)
            old._write_conf()
            if old._running_postmaster() is None:
                old._pg_ctl_start()
            old._pg_ctl_stop()
            state = self._control_data()
        return state["checksum version"] not in ("", "0")

    def _control_data(self) -> dict[str, str]:
        proc = self.cluster._run([str(self.old_bin / "pg_controldata"), str(self.cluster.data_dir)])
        if proc.returncode != 0:
            raise self.cluster._failure("pg_controldata", proc)
        fields = dict(re.findall(r"^([^:\n]+):\s*(.*)$", proc.stdout, re.MULTILINE))
        return {
            "cluster state": fields.get("Database cluster state", "").strip(),
            "checksum version": fields.get("Data page checksum version", "").strip(),
        }


def finish_interrupted_upgrade(cluster: EmbeddedPostgres) -> None:
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
