"""Context carried into every log line: the request id, the instance and tenant at work."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType

log_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "chroma_orch_log_context", default=MappingProxyType({})
)


@contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Add ``fields`` to the log context of this task for the block."""
    merged = {**log_context.get(), **{k: str(v) for k, v in fields.items() if v is not None}}
    token = log_context.set(merged)
    try:
        yield
    finally:
        log_context.reset(token)
