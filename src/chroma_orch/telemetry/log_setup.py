"""Logging: key=value text by default, one JSON object per line on request.

Every record carries the context bound with ``telemetry.context.bind`` (request
id in request handlers; instance and tenant in the reconciler). Secrets never
reach a log line: tokens are not logged anywhere, and as a last guard any
bearer-token-looking text is masked.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

from chroma_orch.telemetry.context import log_context

_TOKEN = re.compile(r"(co_)[A-Za-z0-9_\-]{8,}|(Bearer\s+)\S+", re.IGNORECASE)


def mask_secrets(text: str) -> str:
    return _TOKEN.sub(lambda m: (m.group(1) or m.group(2)) + "***", text)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.context = dict(log_context.get())
        return True


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = getattr(record, "context", {})
        if context:
            line += " " + " ".join(f"{k}={v}" for k, v in sorted(context.items()))
        return mask_secrets(line)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "context", {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return mask_secrets(json.dumps(entry, default=str))


def configure_logging_unless_configured(level: str, fmt: str = "text") -> bool:
    """``configure_logging`` for an entry point that set no logging up (uvicorn started
    directly on ``create_app``), so it masks secrets and formats as ``chroma-orch serve``
    does; left alone when the root logger has handlers already (``serve``, a test's log
    capture, an application embedding the service). True when it configured."""
    if logging.getLogger().handlers:
        return False
    configure_logging(level, fmt)
    return True


def configure_logging(level: str, fmt: str = "text") -> None:
    """Install one stderr handler on the root logger (and uvicorn's loggers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per heartbeat otherwise
