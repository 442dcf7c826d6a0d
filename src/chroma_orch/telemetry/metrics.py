"""Prometheus metrics. Counters and histograms are process-wide; gauges that
describe the fleet (instances by phase, intents waiting) are read from the
database when /metrics is scraped, so every replica reports the same truth."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter(
    "chroma_orch_http_requests_total",
    "HTTP requests by method, route and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "chroma_orch_http_request_seconds",
    "HTTP request latency by route.",
    ["route"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30, 60),
)
INSTANCES = Gauge(
    "chroma_orch_instances",
    "Instances (not deleted) by phase and runtime.",
    ["phase", "runtime"],
    registry=REGISTRY,
)
INTENTS_WAITING = Gauge(
    "chroma_orch_intents_waiting",
    "Lifecycle intents not yet carried out (pending or in progress).",
    registry=REGISTRY,
)
LAUNCH_TO_RUNNING = Histogram(
    "chroma_orch_launch_to_running_seconds",
    "From the start of a start attempt to the server answering, by runtime.",
    ["runtime"],
    registry=REGISTRY,
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
)
START_PHASE_SECONDS = Histogram(
    "chroma_orch_start_phase_seconds",
    "From the start of a start attempt to reaching each start phase (provisioning, "
    "pending, pulling, pulled, running, listening, heartbeat_answered), by runtime.",
    ["runtime", "phase"],
    registry=REGISTRY,
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 300, 600),
)
RECONCILE_SECONDS = Histogram(
    "chroma_orch_reconcile_seconds",
    "Duration of one instance's reconcile pass, by result.",
    ["result"],
    registry=REGISTRY,
)
RECONCILE_PASSES = Counter(
    "chroma_orch_reconcile_loop_passes_total",
    "Passes of the reconciler's loops, by loop.",
    ["loop"],
    registry=REGISTRY,
)
RUNTIME_CALLS = Counter(
    "chroma_orch_runtime_calls_total",
    "Calls into the runtime driver, by runtime and operation.",
    ["runtime", "operation"],
    registry=REGISTRY,
)
RUNTIME_ERRORS = Counter(
    "chroma_orch_runtime_errors_total",
    "Failed runtime calls, by runtime, operation and kind (error or throttle).",
    ["runtime", "operation", "kind"],
    registry=REGISTRY,
)
AWS_ERRORS = Counter(
    "chroma_orch_aws_errors_total",
    "Failed AWS API calls (before retries), by operation and kind (throttle or error).",
    ["operation", "kind"],
    registry=REGISTRY,
)
WEBSOCKET_SUBSCRIBERS = Gauge(
    "chroma_orch_websocket_subscribers",
    "Open WebSocket subscriptions in this replica.",
    registry=REGISTRY,
)
PROXIED_REQUESTS = Counter(
    "chroma_orch_proxied_requests_total",
    "Requests through the built-in data-plane proxy, by status class.",
    ["status"],
    registry=REGISTRY,
)
PYTHON_GC_FROZEN = Gauge(
    "chroma_orch_python_gc_frozen_objects",
    "Objects frozen out of the garbage collector (start-up's, by chroma_orch.process_tuning).",
    registry=REGISTRY,
)
PYTHON_GC_FROZEN.set_function(gc.get_freeze_count)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_LATENCY.labels(route).observe(seconds)
