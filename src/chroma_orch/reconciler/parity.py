"""The parity probe of a guarded upgrade: what a Chroma server answers about its data,
recorded from the old server (the baseline) and compared with the new one's answers.

It speaks Chroma's own v2 HTTP API at the address the data plane forwards the
instance's traffic to: the databases of the default tenant (Chroma has no call that
lists tenants), every collection's name, id and metadata, and for the first
``collections`` of each database (by name) its count, a sample of its records, and a
nearest-neighbour query with the first sampled embedding. A version that cannot read
the data (answers errors, loses collections or records, or finds other neighbours)
differs. The probe reads only: it never writes to the tenant's data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

TENANT = "default_tenant"
SAMPLE = 3
"""Records sampled per collection (their ids, and the first one's embedding queried)."""
NEIGHBOURS = 5
DISTANCE_TOLERANCE = 1e-4
"""Relative: a version may compute distances with other rounding, not other neighbours."""
_PAGE = 100


class ProbeUnavailableError(Exception):
    """The server could not be asked (not answering, or answering errors)."""


async def record(base_url: str, *, collections: int, timeout: float) -> dict[str, Any]:
    """What the server at ``base_url`` answers about its data (JSON)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout) as client:
        try:
            return {"databases": await _databases(client, collections)}
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise ProbeUnavailableError(f"{type(exc).__name__}: {exc}") from exc


async def _get(client: httpx.AsyncClient, path: str, **params: Any) -> Any:
    response = await client.get(path, params=params)
    response.raise_for_status()
    return response.json()


async def _post(client: httpx.AsyncClient, path: str, body: Mapping[str, Any]) -> Any:
    response = await client.post(path, json=body)
    response.raise_for_status()
    return response.json()


async def _databases(client: httpx.AsyncClient, sampled: int) -> dict[str, Any]:
    found = await _get(client, f"/api/v2/tenants/{TENANT}/databases")
    names = sorted(str(database["name"]) for database in found)
    return {name: await _database(client, name, sampled) for name in names}


async def _database(client: httpx.AsyncClient, name: str, sampled: int) -> dict[str, Any]:
    base = f"/api/v2/tenants/{TENANT}/databases/{quote(name, safe='')}/collections"
    listed: list[dict[str, Any]] = []
    while True:
        page = await _get(client, base, limit=_PAGE, offset=len(listed))
        listed.extend(page)
        if len(page) < _PAGE:
            break
    listed.sort(key=lambda collection: str(collection["name"]))
    out: dict[str, Any] = {}
    for index, collection in enumerate(listed):
        entry = {"id": str(collection["id"]), "metadata": collection.get("metadata")}
        if index < sampled:
            entry |= await _sample(client, f"{base}/{collection['id']}")
        out[str(collection["name"])] = entry
    return out


async def _sample(client: httpx.AsyncClient, path: str) -> dict[str, Any]:
    count = int(await _get(client, f"{path}/count"))
    got = await _post(client, f"{path}/get", {"limit": SAMPLE, "include": ["embeddings"]})
    ids = [str(i) for i in got["ids"]]
    sample: dict[str, Any] = {"count": count, "sample_ids": sorted(ids)}
    embeddings = got.get("embeddings") or []
    if embeddings and count:
        query = {
            "query_embeddings": [embeddings[0]],
            "n_results": min(NEIGHBOURS, count),
            "include": ["distances"],
        }
        answer = await _post(client, f"{path}/query", query)
        sample["neighbours"] = [str(i) for i in answer["ids"][0]]
        sample["distances"] = [float(d) for d in answer["distances"][0]]
    return sample


def compare(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """What differs between two recordings, one sentence each (empty: the same)."""
    differences: list[str] = []
    old, new = before.get("databases", {}), after.get("databases", {})
    for name in sorted(set(old) | set(new)):
        if name not in new:
            differences.append(f"database {name!r} is missing")
        elif name not in old:
            differences.append(f"database {name!r} appeared")
        else:
            differences += _compare_database(name, old[name], new[name])
    return differences


def _compare_database(
    database: str, before: Mapping[str, Any], after: Mapping[str, Any]
) -> list[str]:
    differences = []
    for name in sorted(set(before) | set(after)):
        where = f"collection {database}/{name}"
        if name not in after:
            differences.append(f"{where} is missing")
        elif name not in before:
            differences.append(f"{where} appeared")
        else:
            differences += [f"{where}: {d}" for d in _compare_entry(before[name], after[name])]
    return differences


def _compare_entry(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    differences = []
    for key in ("id", "metadata", "count", "sample_ids", "neighbours"):
        if before.get(key) != after.get(key):
            differences.append(f"{key} was {before.get(key)!r}, is {after.get(key)!r}")
    old, new = before.get("distances") or [], after.get("distances") or []
    close = len(old) == len(new) and all(
        math.isclose(a, b, rel_tol=DISTANCE_TOLERANCE, abs_tol=DISTANCE_TOLERANCE)
        for a, b in zip(old, new, strict=True)
    )
    if not close:
        differences.append(f"distances were {old!r}, are {new!r}")
    return differences
