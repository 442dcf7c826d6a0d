"""Snapshots of a ~150 MB instance (100k vectors of dimension 384) on the local
runtime, each figure beside a floor measured in the same run. Prints JSON.

    python bench/snapshots.py [--vectors 100000] [--dim 384] [--rounds 2]

The data is built with a ``chromadb.PersistentClient`` directly in the instance's
data directory while it is stopped (loading 100k vectors through the HTTP API is
several times slower and measures nothing of ours), then the instance is started.

ours                                      floor
snapshot: POST .../snapshots -> ready     tar -cf - DIR | zstd -T0 > FILE; and, as
                                            ours quiesces, cp + start + that
write pause: longest gap between the      the server stopped, the directory copied
  acknowledged writes of a client writing   (cp -a) and a bare server started on it
  meanwhile (one upsert at a time)          (heartbeat 200): stop + copy + start by hand
archive size                              the size of FILE
restore: POST .../restore -> running      tar|zstd of the current data (what restore
  (the data it had is kept first as a       keeps as pre_restore) + zstd -d | tar -x of
  pre_restore snapshot)                     FILE + a bare server start on it
clone: POST /v1/instances                 zstd -d | tar -x of FILE + a bare server
  {"from_snapshot"} -> running              start on it

Each floor is also given with ``sync`` after the tools' writes (``*_synced``): ours
makes the archive (snapshot) and the restored files (restore, clone) durable before
they count, the plain tools do not.

The pause floor stops at the bare server's heartbeat, while the writer's next
acknowledgement after our pause also waits for Chroma's first write after its start
(it loads the HNSW index): the pause ratio overstates what is ours.

Ratios are ours / floor, medians over ``rounds``. The machine may be shared: the
floors run in the same run, interleaved with ours, so both see the same load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import default_reconciler_timing, fresh_database, postgres, workdir  # noqa: E402
from bench.lifecycle import bare_starts  # noqa: E402
from chroma_orch.runtimes.local.launch import server_command  # noqa: E402
from chroma_orch.settings import LocalRuntimeSettings  # noqa: E402
from tests.e2e.service import Service, free_port, kill_chroma_processes  # noqa: E402
from tests.helpers import create_tenant  # noqa: E402

POLL = 0.05
COLLECTION = "bench"


def build_data(path: Path, vectors: int, dim: int) -> None:
    """``vectors`` random vectors in one collection of a Chroma persist directory."""
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(str(path), settings=Settings(anonymized_telemetry=False))
    docs = client.get_or_create_collection(COLLECTION)
    rng = np.random.default_rng(7)
    batch = min(client.get_max_batch_size(), 5000)
    for start in range(0, vectors, batch):
        n = min(batch, vectors - start)
        docs.add(
            ids=[f"v{start + i}" for i in range(n)],
            embeddings=rng.random((n, dim), dtype=np.float32),
        )
    del docs, client


def fill_data(data: Path, args: argparse.Namespace) -> None:
    """Build the data in ``data``, or copy it from ``--data-cache`` (built there the
    first time: building 100k vectors takes minutes on a small machine)."""
    cache: Path | None = args.data_cache
    if cache is None:
        build_data(data, args.vectors, args.dim)
        return
    cache = cache / f"{args.vectors}x{args.dim}"
    if not cache.is_dir():
        build_data(cache.with_suffix(".partial"), args.vectors, args.dim)
        cache.with_suffix(".partial").rename(cache)
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(cache, data)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def sh(command: str) -> float:
    started = time.monotonic()
    subprocess.run(["bash", "-o", "pipefail", "-c", command], check=True)
    return time.monotonic() - started


class Writer:
    """One upsert at a time through the data plane; the time of every acknowledgement."""

    def __init__(self, base: str, token: str, dim: int) -> None:
        import chromadb
        from chromadb.config import Settings

        client = chromadb.HttpClient(
            host=base,
            headers={"Authorization": f"Bearer {token}"},
            settings=Settings(anonymized_telemetry=False),
        )
        self.docs = client.get_collection(COLLECTION)
        self.dim = dim
        self.acks: list[float] = []
        self.failures = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        rng = np.random.default_rng(11)
        n = 0
        while not self.stop.is_set():
            try:
                self.docs.upsert(ids=[f"p{n}"], embeddings=rng.random((1, self.dim)).tolist())
            except Exception:  # paused: 502/503
                self.failures += 1
                time.sleep(0.01)
                continue
            self.acks.append(time.monotonic())
            n += 1

    def longest_gap(self, since: float, until: float) -> float:
        acks = [t for t in self.acks if since <= t <= until]
        return max((b - a for a, b in zip(acks, acks[1:], strict=False)), default=until - since)


async def _until(http: httpx.AsyncClient, url: str, field: str, value: str) -> None:
    while True:
        body = (await http.get(url)).json()
        if body.get(field) == value:
            return
        if body.get("phase") == "failed":
            raise RuntimeError(f"failed: {body}")
        await asyncio.sleep(POLL)


async def _running(http: httpx.AsyncClient, instance_id: str, generation: int) -> None:
    while True:
        body = (await http.get(f"/v1/instances/{instance_id}")).json()
        if body["phase"] == "running" and body["observed_generation"] >= generation:
            return
        if body["phase"] == "failed":
            raise RuntimeError(f"failed: {body}")
        await asyncio.sleep(POLL)


async def snapshot_round(
    http: httpx.AsyncClient, instance_id: str, writer: Writer
) -> tuple[float, float, dict[str, Any]]:
    """(request -> ready seconds, longest write gap, the snapshot)."""
    await asyncio.sleep(1.0)  # steady writing before the request
    failures = writer.failures
    started = time.monotonic()
    created = (await http.post(f"/v1/instances/{instance_id}/snapshots")).json()
    await _until(http, f"/v1/snapshots/{created['id']}", "phase", "ready")
    took = time.monotonic() - started
    await asyncio.sleep(1.0)  # the writer's first acks after the pause
    gap = writer.longest_gap(started, time.monotonic())
    snapshot = (await http.get(f"/v1/snapshots/{created['id']}")).json()
    snapshot["writer_failures"] = writer.failures - failures
    return took, gap, snapshot


async def restore_round(http: httpx.AsyncClient, instance_id: str, snapshot_id: str) -> float:
    started = time.monotonic()
    answer = await http.post(
        f"/v1/instances/{instance_id}/restore", json={"snapshot_id": snapshot_id}
    )
    answer.raise_for_status()
    await _running(http, instance_id, answer.json()["instance"]["generation"])
    return time.monotonic() - started


async def clone_round(http: httpx.AsyncClient, snapshot_id: str) -> float:
    started = time.monotonic()
    answer = await http.post(
        "/v1/instances", json={"name": f"c-{uuid.uuid4().hex[:6]}", "from_snapshot": snapshot_id}
    )
    answer.raise_for_status()
    clone_id = answer.json()["instance"]["id"]
    await _running(http, clone_id, answer.json()["instance"]["generation"])
    took = time.monotonic() - started
    await http.delete(f"/v1/instances/{clone_id}", params={"keep_data": "false", "purge": "true"})
    return took


async def bare_start(path: Path, base: Path) -> float:
    port = free_port()
    argv = server_command(LocalRuntimeSettings(), path, base / f"{port}.lock", "127.0.0.1", port)
    return (await bare_starts([argv], [port], base))[0]


async def floors(data: Path, base: Path) -> dict[str, float]:
    """The plain tools on a copy of ``data`` (the live directory is never touched)."""
    scratch = base / "floor"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    copy = scratch / "copy"
    out: dict[str, float] = {"cp": sh(f"cp -a {data} {copy}")}
    archive = scratch / "a.tar.zst"
    out["pack"] = sh(f"tar -C {copy} -cf - . | zstd -q -T0 -o {archive}")
    out["pack_sync"] = sh("sync")  # ours makes the archive durable (fsync) before `ready`
    out["archive_bytes"] = archive.stat().st_size
    restored = scratch / "restored"
    restored.mkdir()
    out["unpack"] = sh(f"zstd -q -d -c {archive} | tar -C {restored} -xf -")
    out["unpack_sync"] = sh("sync")  # and the restored files before they go live
    out["start"] = await bare_start(restored, scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    return out


def median(values: list[float]) -> float:
    return round(float(np.median(values)), 3)


async def measure(service: Service, base: Path, args: argparse.Namespace) -> dict[str, Any]:
    async with service.client() as admin:
        _, token = await create_tenant(admin, "bench")
    async with httpx.AsyncClient(
        base_url=service.url, headers={"Authorization": f"Bearer {token}"}, timeout=120
    ) as http:
        created = (await http.post("/v1/instances", json={"name": "big"})).json()
        instance_id = created["instance"]["id"]
        await _until(http, f"/v1/instances/{instance_id}", "phase", "running")
        await http.post(f"/v1/instances/{instance_id}/stop")
        await _until(http, f"/v1/instances/{instance_id}", "phase", "stopped")
        data = service.data_dir / "instances" / instance_id
        built = time.monotonic()
        await asyncio.to_thread(fill_data, data, args)
        build_seconds = time.monotonic() - built
        started = (await http.post(f"/v1/instances/{instance_id}/start")).json()
        await _running(http, instance_id, started["instance"]["generation"])
        ours: dict[str, list[float]] = {k: [] for k in ("snapshot", "pause", "restore", "clone")}
        floor: dict[str, list[float]] = {}
        sizes: list[int] = []
        failed: list[int] = []
        writer = Writer(f"{service.url}/i/{instance_id}", token, args.dim)
        writer.thread.start()
        for _ in range(args.rounds):
            for key, value in (await floors(data, base)).items():
                floor.setdefault(key, []).append(value)
            took, gap, snapshot = await snapshot_round(http, instance_id, writer)
            ours["snapshot"].append(took)
            ours["pause"].append(gap)
            sizes.append(snapshot["size_bytes"])
            failed.append(snapshot["writer_failures"])
            ours["clone"].append(await clone_round(http, snapshot["id"]))
            writer.stop.set()
            writer.thread.join()
            ours["restore"].append(await restore_round(http, instance_id, snapshot["id"]))
            writer = Writer(f"{service.url}/i/{instance_id}", token, args.dim)
            writer.thread.start()
        writer.stop.set()
        writer.thread.join()
    return report(ours, floor, sizes, data, build_seconds, failed, args)


def report(
    ours: dict[str, list[float]],
    floor: dict[str, list[float]],
    sizes: list[int],
    data: Path,
    build_seconds: float,
    failures: list[int],
    args: argparse.Namespace,
) -> dict[str, Any]:
    f = {k: median(v) for k, v in floor.items()}
    o = {k: median(v) for k, v in ours.items()}
    floors_of = {
        "snapshot": f["pack"],
        # by hand, the same way: stop, copy, start the server again, pack the copy
        "snapshot_quiesced_by_hand": f["cp"] + f["start"] + f["pack"],
        "pause": f["cp"] + f["start"],
        "restore": f["pack"] + f["unpack"] + f["start"],
        "clone": f["unpack"] + f["start"],
        # the same with `sync` where ours makes what it wrote durable (on a shared
        # machine `sync` also waits for others' writes: an upper bound of that part)
        "snapshot_synced": f["pack"] + f["pack_sync"],
        "restore_synced": f["pack"] + f["pack_sync"] + f["unpack"] + f["unpack_sync"] + f["start"],
        "clone_synced": f["unpack"] + f["unpack_sync"] + f["start"],
    }
    return {
        "benchmark": "snapshots",
        "vectors": args.vectors,
        "dim": args.dim,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "data_bytes": du(data),
        "data_build_seconds": round(build_seconds, 1),
        "seconds": {
            "ours": o,
            "floor_parts": f,
            "floor": {k: round(v, 3) for k, v in floors_of.items()},
        },
        "archive_bytes": {"ours": int(np.median(sizes)), "floor": int(f["archive_bytes"])},
        "ratio": {k: round(o[k.split("_")[0]] / v, 3) for k, v in floors_of.items()}
        | {"archive_bytes": round(float(np.median(sizes)) / f["archive_bytes"], 3)},
        "writer_failed_requests_per_snapshot": failures,
        "target_met": {
            "snapshot_within_1_5x": o["snapshot"] / floors_of["snapshot"] <= 1.5,
            "restore_within_1_5x": o["restore"] / floors_of["restore"] <= 1.5,
            "pause_under_1s": o["pause"] < 1.0,
        },
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with workdir() as base, postgres(base) as admin_url:
        service = Service(
            await fresh_database(admin_url), base / "data", **default_reconciler_timing()
        )
        await service.start()
        try:
            return await measure(service, base, args)
        finally:
            await service.stop()
            kill_chroma_processes(base / "data")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--data-cache", type=Path, default=None, help="keep the built data here for later runs"
    )
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
