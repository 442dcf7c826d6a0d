"""The driver contract every runtime implements (JupyterHub's Spawner is the model).

A runtime turns an instance spec into a running Chroma server and reports on it.
It keeps no state of its own that matters: everything needed to find a server
again lives in its ``Handle``, which the reconciler stores on the instance row as
JSON (``Handle.to_json``/``Handle.from_json``), so a restarted service re-attaches
instead of launching twice. The reconciler reads only the declared fields of a
handle (``generation``); ``data`` belongs to the runtime that made it.

Runtimes are found by name through the ``chroma_orch.runtimes`` entry point group
(``chroma_orch.runtimes.registry``); README "Runtimes" tells how to add one.

Edge cases every driver must honour:

- ``poll`` of a handle whose server is gone answers ``ObservedState.EXITED`` (with the
  exit detail when known); it never raises for "not found".
- ``stop`` of something already gone is a no-op; ``delete`` of something never
  started is a no-op.
- ``start`` for an instance whose server is already running (the service crashed
  between start and saving the handle) returns a handle to *that* server instead
  of starting a second one.
- ``discover`` on a new runtime object (the service restarted) finds the servers
  still running, keyed by instance id; the handles it returns may be polled,
  stopped and deleted like the ones ``start`` returned.
- ``heartbeat`` never raises for a server that does not answer: it answers False.
- ``on_exit`` callbacks are called with the instance id when the runtime notices
  by itself that a server exited (a runtime that only learns it by polling may
  never call them); ``poll`` reports the exit either way.
- ``logs`` and ``follow_logs`` take the handle, or ``None`` (the instance's
  latest output, or nothing; never an error for an instance never started).
  ``follow_logs`` yields the last lines, then new ones as they are written, and
  ends once the output is gone for good: the instance deleted (the local
  runtime's log spans restarts), or its server gone where output is per server
  (ECS).
- ``poll`` and ``wait_ready`` of a server that is starting say how far its start got
  (``Observation.phase``, a ``StartPhase``) and, where the platform tells, when each
  phase was reached (``Observation.phase_times``); a runtime reports only the phases
  it can see, and the reconciler records each new one as an event.
- Transient failures raise ``RuntimeUnavailableError``; the reconciler retries
  with backoff. ``StartFailedError`` means this attempt is over; like an exit,
  it carries an ``ExitCause`` that says whether it counts against the restart
  budget (``CRASH``, the default) or not.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
"""What a runtime accepts as an instance id (the reconciler passes UUIDs). No dots
or slashes: ids become file names and tags; "<id>.lock" never names another's data."""

_GENERATION = "generation"


@dataclass(frozen=True)
class Handle:
    """Where a runtime finds one server again; stored on the instance row as JSON.

    The JSON is ``data`` with ``generation`` beside it (one flat object, the shape
    rows have always had), so every stored handle loads."""

    generation: int | None
    """The instance generation the server was started for; None when the runtime
    found the server by itself (``discover``) and cannot tell."""
    data: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """The runtime's own keys (JSON values): only the runtime that made the handle
    reads them."""

    def __post_init__(self) -> None:
        if _GENERATION in self.data:
            raise ValueError(f"{_GENERATION!r} is a declared field, not runtime data")
        object.__setattr__(self, "data", MappingProxyType(dict(self.data)))

    def to_json(self) -> dict[str, Any]:
        return {**self.data, _GENERATION: self.generation}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Handle:
        data = dict(raw)
        generation = data.pop(_GENERATION, None)
        return cls(None if generation is None else int(generation), data)

    @classmethod
    def load(cls, raw: Mapping[str, Any] | None) -> Handle | None:
        """``from_json`` for a column that may be NULL."""
        return None if raw is None else cls.from_json(raw)


class ObservedState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    EXITED = "exited"


class ExitCause(enum.StrEnum):
    """Why a server exited or a start failed, as far as the restart budget goes."""

    CRASH = "crash"
    """The server (or its start) failed: restarted with backoff, counted against
    the restart budget. What a runtime reports unless it knows better."""
    INFRASTRUCTURE = "infrastructure"
    """The platform stopped a healthy server (ECS task retirement or maintenance, a
    Spot interruption): restarted at once, not counted."""
    CAPACITY = "capacity"
    """The platform could not place or pull the server for now (no capacity, an
    image-pull rate limit): retried with a longer backoff, not counted."""


class StartPhase(enum.StrEnum):
    """How far a server's start got: the one vocabulary every runtime reports in, in
    the order a start goes through it. A runtime reports the phases it can see and
    skips the others (ECS has no "listening"; a local process has no provisioning,
    pending or pull)."""

    PROVISIONING = "provisioning"
    """The platform acquires what the server needs (ECS: ``PROVISIONING``, the
    task's network interface)."""
    PENDING = "pending"
    """Placed, waiting for the platform to start it (ECS: ``PENDING``)."""
    PULLING = "pulling"
    """The server's image is being pulled (ECS: ``pullStartedAt``)."""
    PULLED = "pulled"
    """The image pull ended (ECS: ``pullStoppedAt``)."""
    RUNNING = "running"
    """The server's process runs (ECS: ``RUNNING``, ``startedAt``; local: spawned)."""
    LISTENING = "listening"
    """The server's process listens on its port (local)."""
    HEARTBEAT_ANSWERED = "heartbeat_answered"
    """Chroma answers ``/api/v2/heartbeat``: the server is ready."""

    @property
    def rank(self) -> int:
        """Its place in the order a start goes through."""
        return list(StartPhase).index(self)


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class Observation:
    state: ObservedState
    endpoint: Endpoint | None = None
    reason: str | None = None
    """Machine-readable cause when the server exited (e.g. ``ProcessExited``)."""
    message: str | None = None
    """Human explanation: exit code, last log lines."""
    cause: ExitCause = ExitCause.CRASH
    """When the server exited: the class of the failure (``ExitCause``)."""
    phase: StartPhase | None = None
    """While it starts (and once it runs): the furthest start phase reached, as far as
    the runtime can see; None when it cannot tell."""
    phase_times: Mapping[StartPhase, datetime] = field(default_factory=dict, hash=False)
    """When start phases were reached (timezone-aware), where the runtime knows it
    (ECS task timestamps); the reconciler takes the time it first saw the others."""

    @property
    def live(self) -> bool:
        """Whether a server is there (starting, running or stopping), not gone."""
        return self.state is not ObservedState.EXITED


class Architecture(enum.StrEnum):
    X86_64 = "x86_64"
    ARM64 = "arm64"


@dataclass(frozen=True)
class ServerSpec:
    """What one instance's server runs on: its size, its Chroma version and its server
    settings. The instance row keeps it as JSON (``to_json``/``from_json``), every field
    resolved by the runtime's ``SpecSupport.resolve`` when the spec was accepted, so a
    later change of a runtime's defaults never changes a running instance's spec."""

    cpu: int | None = None
    """CPU units (1024 = 1 vCPU). ECS: the task's CPU; local: not enforced (None)."""
    memory_mib: int | None = None
    """Memory in MiB. ECS: the task's memory; local: the limit the launcher enforces
    (None: unlimited)."""
    architecture: Architecture | None = None
    """CPU architecture (ECS ``runtimePlatform``); None where the runtime has one only."""
    chroma_version: str | None = None
    """The Chroma server version (ECS: the image tag; local: a key of the runtime's map
    of versions to launchers)."""
    settings: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """Chroma server settings, from the whitelist ``runtimes.server_settings`` names."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))

    def to_json(self) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "cpu": self.cpu,
            "memory_mib": self.memory_mib,
            "architecture": None if self.architecture is None else self.architecture.value,
            "chroma_version": self.chroma_version,
            "settings": dict(self.settings),
        }
        return raw

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> ServerSpec:
        """The spec a row keeps (an empty or NULL one, of rows written before specs
        existed: every field the runtime's default)."""
        raw = raw or {}
        architecture = raw.get("architecture")
        return cls(
            cpu=raw.get("cpu"),
            memory_mib=raw.get("memory_mib"),
            architecture=None if architecture is None else Architecture(architecture),
            chroma_version=raw.get("chroma_version"),
            settings=raw.get("settings") or {},
        )


@dataclass(frozen=True)
class SpecCheck:
    """A runtime's answer about a spec: the spec with its defaults filled in, what
    keeps it from running (empty: it runs), and how each limit is enforced."""

    resolved: ServerSpec
    problems: list[str] = field(default_factory=list)
    """One sentence each, e.g. "4096 MiB is not valid with 0.25 vCPU on Fargate"."""
    enforcement: Mapping[str, str] = field(default_factory=dict)
    """How each part of the size is enforced, honestly ("memory": "RLIMIT_AS of the
    server process", "cpu": "not enforced by the local runtime")."""


@runtime_checkable
class SpecSupport(Protocol):
    """A runtime that runs servers of more than one spec (both built-in runtimes; a
    runtime without it runs every instance on its one default, and refuses any spec
    that asks for something)."""

    def chroma_versions(self) -> list[str]:
        """The Chroma versions this runtime can run, its default first."""

    def check_spec(self, spec: ServerSpec) -> SpecCheck:
        """``spec`` resolved against the runtime's defaults (a None field gets the
        runtime's default), and its problems. Pure: no I/O."""


def spec_support(runtime: object) -> SpecSupport | None:
    """``runtime`` as ``SpecSupport`` (through a wrapper's ``inner``), or None."""
    inner = getattr(runtime, "inner", runtime)
    return inner if isinstance(inner, SpecSupport) else None


@dataclass(frozen=True)
class InstanceSpec:
    """What the reconciler asks a runtime to run."""

    instance_id: str
    tenant_id: str
    name: str
    generation: int
    port: int | None = None
    """A fixed port for the server (tests); else a runtime that chooses ports reserves
    one itself (the local runtime, through its ``PortReservations``)."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """The instance's spec as its row keeps it (JSON); ``server`` is it typed."""
    server: ServerSpec = field(default_factory=ServerSpec)
    """The server's size, Chroma version and settings (resolved when accepted)."""
    start_token: str = ""
    """Unique per start attempt (instance, generation, restart): an idempotency
    token for runtimes whose start call accepts one (ECS ``clientToken``)."""
    launch_by: float | None = None
    """``time.monotonic()`` after which this start must launch nothing: the runtime
    checks it right before each launch it sends (a RunTask, a spawn) and raises
    ``LaunchTooLateError`` instead. The reconciler sets it ``launch_budget`` after the
    "starting" it records, and a stop of a start that recorded no server trusts the
    runtime's listing only once that much time, and ``visibility_grace``, has passed."""


class StartFailedError(Exception):
    """This start attempt failed for a reason the instance should show."""

    def __init__(self, reason: str, message: str, cause: ExitCause = ExitCause.CRASH) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.cause = cause


class RuntimeUnavailableError(Exception):
    """The runtime could not be reached or refused for now; retry later."""


class LaunchTooLateError(RuntimeUnavailableError):
    """The start's ``launch_by`` passed before its launch was sent: nothing was launched
    (a later start tries again)."""


def check_launch_by(spec: InstanceSpec) -> None:
    """Raise ``LaunchTooLateError`` once ``spec.launch_by`` has passed; call it right
    before sending a launch (no ``await`` between the two)."""
    if spec.launch_by is not None and time.monotonic() > spec.launch_by:
        raise LaunchTooLateError(
            f"instance {spec.instance_id}: its start's launch_budget ran out before the launch"
        )


class RuntimeMisconfiguredError(Exception):
    """The runtime's start-up check found errors (one line each): the service must
    not start with it."""


@runtime_checkable
class Preflight(Protocol):
    """A runtime that checks its environment before the service starts (optional;
    the control plane awaits ``preflight`` once, right after building it)."""

    async def preflight(self) -> None:
        """Raise ``RuntimeMisconfiguredError`` naming every problem, or return."""


@runtime_checkable
class DataDirectories(Protocol):
    """A runtime whose servers keep their data in a directory this host can read (the
    local runtime; optional). Snapshots are archives of that directory, made while the
    instance's server does not run, and a restore replaces it (docs/data.md)."""

    def data_path(self, instance_id: str) -> Path:
        """The instance's data directory (it may not exist yet), with any swap of
        ``replace_data`` a crash interrupted finished or undone first. Read it only
        while the instance's server does not run: Chroma writes its files in place."""

    async def replace_data(self, instance_id: str, fill: Callable[[Path], Awaitable[None]]) -> None:
        """Make the instance's data what ``fill`` writes into a new directory (given
        to it, not existing yet, on the data's own filesystem), atomically: when
        ``fill`` raises, the data is untouched and nothing it wrote is left; a crash at
        any point leaves the old data or the new, never a mix (the next call, or the
        next start, finishes or undoes a swap a crash interrupted). The instance's
        server must not run."""


def data_directories(runtime: object) -> DataDirectories | None:
    """``runtime`` as ``DataDirectories`` (through a wrapper's ``inner``), or None."""
    inner = getattr(runtime, "inner", runtime)
    return inner if isinstance(inner, DataDirectories) else None


@dataclass(frozen=True)
class NativeSnapshot:
    """A snapshot a runtime keeps in its platform's own snapshot service (ECS: EBS)."""

    location: str | None
    """The platform's id of it (an EBS snapshot id); None: the instance had no data
    yet (a snapshot of nothing: restoring it empties the instance)."""
    state: str
    """``pending`` (being made), ``completed`` (restorable) or ``error``."""
    size_bytes: int | None = None
    message: str = ""


@runtime_checkable
class NativeSnapshots(Protocol):
    """Snapshots a runtime takes with its platform's own means (optional; ECS with
    ``storage=ebs``: EBS snapshots). The runtime's own data lifecycle never deletes a
    snapshot taken here: only ``delete_snapshot`` does (docs/data.md "ECS")."""

    store: str
    """What snapshot rows record as their ``store`` (``"ebs"``)."""

    async def take_snapshot(
        self, instance_id: str, tenant_id: str, snapshot_id: str
    ) -> NativeSnapshot | str:
        """Keep the instance's data as it is now (its server must not run) as a
        snapshot of its own, tagged with ``snapshot_id``; idempotent (a second call
        finds the first one's). A str: what is awaited first (the data of the last
        server is still being saved); ask again."""

    async def snapshot_state(self, location: str) -> NativeSnapshot:
        """How the snapshot at ``location`` is (``error`` when it is gone)."""

    async def load_snapshot(
        self, instance_id: str, tenant_id: str, location: str | None, restore_id: str
    ) -> str | None:
        """Make ``location`` the data the instance's next start gets (its server must
        not run; None: no data); idempotent per ``restore_id``. None once done, else
        what is awaited; ask again."""

    async def delete_snapshot(self, location: str) -> None:
        """Delete the snapshot at ``location``; idempotent."""


def native_snapshots(runtime: object) -> NativeSnapshots | None:
    """The runtime's ``NativeSnapshots`` (its ``native_snapshots`` attribute, through
    a wrapper's ``inner``), or None where it has none (ECS with EFS or ephemeral
    storage, the local runtime)."""
    inner = getattr(runtime, "inner", runtime)
    found = getattr(inner, "native_snapshots", None)
    return found if isinstance(found, NativeSnapshots) else None


def can_snapshot(runtime: object) -> bool:
    """Whether ``runtime`` can copy its instances' data at all: natively (EBS) or
    through their data directories."""
    return native_snapshots(runtime) is not None or data_directories(runtime) is not None


@runtime_checkable
class PollBudget(Protocol):
    """A runtime whose polls spend a rate-limited API budget (optional; the simulated
    cloud's, ECS's DescribeTasks when no task events stand in for it). The liveness
    pass sizes its batches to a share of it: the rest stays for each reconcile's own
    poll of its server (``docs/scale.md``)."""

    def polls_per_second(self) -> float | None:
        """Servers the budget lets the runtime poll per second (calls per second times
        servers per call); None while its polls spend no budget worth sizing."""


def poll_rate(runtime: object) -> float | None:
    """``runtime``'s ``PollBudget`` rate (through a wrapper's ``inner``), or None."""
    inner = getattr(runtime, "inner", runtime)
    return inner.polls_per_second() if isinstance(inner, PollBudget) else None


ExitCallback = Callable[[str], None]
"""Called with the instance id when a runtime notices a server exit by itself."""


class Runtime(Protocol):
    name: str
    allocates_ports: bool
    """True when the runtime chooses its servers' addresses (ports) and keeps them out
    of reuse for the address quarantine itself; False when a stopped server's address
    may go to the next one at once (ECS), so the reconciler drains before a stop."""
    start_timeout: float
    """Seconds a server may take from start to running before the start fails."""
    wake_timeout: float
    """Seconds a proxied request that wakes a stopped instance may be held while its
    server starts: the runtime's start time with margin (seconds for local processes,
    minutes for Fargate tasks); ``culling.wake_timeout`` overrides it."""
    visibility_grace: float
    """Seconds after a start during which the runtime's own listings may not show the
    server yet (ECS is eventually consistent); 0 where a listing is exact. A delete of
    an instance whose start may have launched a server it never recorded waits that
    long before trusting the listing."""
    launch_budget: float
    """Seconds after a start's recorded "starting" during which it may still send its
    launch, its own retries included (ECS: RunTask retried under throttling): the
    reconciler passes the deadline as ``InstanceSpec.launch_by``, and a stop of a start
    that recorded no server waits this plus ``visibility_grace`` before it lists."""

    async def start(self, spec: InstanceSpec) -> Handle:
        """Start (or adopt an already running) server; return once it is launched.
        Nothing is launched once ``spec.launch_by`` has passed (``check_launch_by``
        right before each launch sent).

        Readiness is not awaited here: ``wait_ready`` and ``poll`` report it.
        """

    async def wait_ready(self, handle: Handle, timeout: float) -> Observation:
        """Wait until the server answers, it exits, or ``timeout`` passes.

        Returns the last observation (``RUNNING``, ``EXITED`` or ``STARTING`` on timeout).
        A runtime whose servers take long to start (ECS) may answer ``STARTING`` at
        once; the reconciler's batched liveness pass follows the start from there.
        """

    async def poll(self, handles: Mapping[str, Handle]) -> dict[str, Observation]:
        """Observe many servers at once, keyed as ``handles`` is (instance id)."""

    async def heartbeat(self, servers: Mapping[str, Endpoint], timeout: float) -> dict[str, bool]:
        """Whether each running server answers its health check within ``timeout``
        (``servers``: the address its instance records, keyed by instance id). The
        reconciler's heartbeat pass asks this periodically; a server that misses
        several in a row is restarted as ``Unresponsive``. A runtime that cannot reach
        its servers answers True (not checked). ``chroma_orch.runtimes.heartbeat`` asks
        Chroma's own heartbeat."""

    async def stop(self, handle: Handle) -> None:
        """Stop the server; idempotent. May return before it is gone (``poll``
        then reports ``STOPPING`` until ``EXITED``)."""

    async def delete(self, instance_id: str, handle: Handle | None, keep_data: bool) -> None:
        """Release everything the instance holds (data unless ``keep_data``); idempotent."""

    async def logs(self, instance_id: str, handle: Handle | None, tail: int) -> list[str]:
        """The last ``tail`` lines of the server's output."""

    def follow_logs(
        self, instance_id: str, handle: Handle | None, tail: int
    ) -> AsyncIterator[list[str]]:
        """The last ``tail`` lines, then new lines as the server writes them (batches);
        ends when the server is gone for good. Cancel to stop following."""

    async def discover(self) -> dict[str, Handle]:
        """Servers this runtime can find by itself, keyed by instance id.

        Used after a restart to adopt servers whose handle was never saved and to
        stop orphans whose instance is unknown or deleted.
        """

    def on_exit(self, callback: ExitCallback) -> None:
        """Register a callback for exits the runtime notices without being polled."""

    async def aclose(self) -> None:
        """Release driver resources (not the servers)."""


class PortReservations(Protocol):
    """Where the local runtime gets its servers' ports. The runtime reserves; the
    control plane frees a port in the same statement that records its instance's
    server gone (``db/instance_writes.py``, the writes with ``frees_port``), so the
    ports table and the instances' states never disagree, even across a crash, and
    a stop costs no extra round trip."""

    async def reserve(self, instance_id: str, usable: Callable[[int], bool]) -> int:
        """A port for the instance's server: the one it holds, else a free one of
        the pool, for which ``usable`` is true. Never a port another instance left
        within the address quarantine: when only such ports are free, raises
        ``chroma_orch.errors.NoPortAvailableError`` with ``retry_after`` set."""
        ...

    async def record(self, instance_id: str, port: int) -> None:
        """The instance's server listens on ``port`` (an adopted server)."""
        ...


class AccountRateLimits(Protocol):
    """Token buckets shared by every replica of the deployment: a cloud API's
    budget, which the provider counts per account and region, not per caller."""

    async def acquire(self, bucket: str, burst: int, rate: float, n: int = 1) -> None:
        """Take ``n`` tokens of ``bucket`` (at most ``burst`` held, ``rate`` more per
        second), waiting until the bucket has them: every replica's calls together
        stay within ``burst + rate * seconds``."""
        ...


class TaskStates(Protocol):
    """The latest known state of each cloud task, shared by every replica (a runtime
    observing by events records what any replica received; every replica reads it)."""

    async def record(self, states: Iterable[tuple[str, int, Mapping[str, Any]]]) -> None:
        """Keep ``(key, version, state)`` unless a state of a higher version is known;
        marks each as checked now."""
        ...

    async def fresh(self, keys: Iterable[str], max_age: float) -> dict[str, dict[str, Any]]:
        """The known states of ``keys`` checked within ``max_age`` seconds."""
        ...

    async def prune(self, older_than: float) -> None:
        """Forget states not checked for ``older_than`` seconds."""
        ...


BackgroundLoop = Callable[[str, Callable[[], Awaitable[object]]], None]
"""Registers a named body that runs while the service runs (cancelled at shutdown)."""


@dataclass(frozen=True)
class RuntimeServices:
    """What the control plane offers the runtimes it builds; a runtime's ``build``
    (its entry point) takes what it needs and ignores the rest."""

    ports: PortReservations | None = None
    """Host ports reserved in the database, unique across replicas, with the address
    quarantine (None: the runtime gets ``InstanceSpec.port`` or needs no ports)."""
    rate_limits: AccountRateLimits | None = None
    """API rate budgets shared by every replica, kept in the database (None: the
    runtime limits each replica on its own)."""
    task_states: TaskStates | None = None
    """Cloud task states shared by every replica, kept in the database (None: a
    runtime that needs them observes by polling)."""
    background: BackgroundLoop | None = None
    """Where a runtime registers a loop of its own (e.g. consuming a queue); None: none
    runs."""
