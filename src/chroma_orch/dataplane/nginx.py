"""Writes a ready-to-run Nginx configuration from ``deploy/nginx.conf``.

``deploy/nginx.conf`` is used as is; what differs per site lives in the two
files it includes from its own directory, which this writes:

    python -m chroma_orch.dataplane.nginx --backend 127.0.0.1:8080 --listen 8000 --out DIR
    nginx -c DIR/nginx.conf -p DIR

``--backend`` may be repeated (one per service replica).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

CONFIG = "nginx.conf"
UPSTREAM_INCLUDE = "chroma-orch-upstream.conf"
LISTEN_INCLUDE = "chroma-orch-listen.conf"


def default_source() -> Path:
    """``deploy/nginx.conf`` of the source tree this package runs from."""
    return Path(__file__).resolve().parents[3] / "deploy" / CONFIG


def render(
    out_dir: Path,
    *,
    backends: Sequence[str],
    listen: Sequence[str],
    keepalive: int = 64,
    source: Path | None = None,
) -> Path:
    """Copy the configuration into ``out_dir`` with its includes; returns its path.

    ``backends`` are ``host:port`` of service replicas; ``listen`` are arguments
    of Nginx ``listen`` directives (``8000``, ``127.0.0.1:8000``, ``443 ssl``).
    """
    if not backends or not listen:
        raise ValueError("at least one backend and one listen address are needed")
    source = source or default_source()
    if not source.is_file():
        raise FileNotFoundError(f"{source} not found (pass source=/path/to/deploy/nginx.conf)")
    out_dir.mkdir(parents=True, exist_ok=True)
    config = out_dir / CONFIG
    shutil.copyfile(source, config)
    servers = "".join(f"    server {backend};\n" for backend in backends)
    (out_dir / UPSTREAM_INCLUDE).write_text(
        f"upstream chroma_orch_backend {{\n{servers}    keepalive {keepalive};\n}}\n"
    )
    (out_dir / LISTEN_INCLUDE).write_text("".join(f"listen {item};\n" for item in listen))
    return config


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backend", action="append", required=True, help="host:port of a replica")
    parser.add_argument("--listen", action="append", required=True, help="Nginx listen argument")
    parser.add_argument("--out", type=Path, required=True, help="directory to write")
    parser.add_argument("--source", type=Path, default=None, help="deploy/nginx.conf to copy")
    parser.add_argument("--keepalive", type=int, default=64, help="idle backend connections")
    args = parser.parse_args(argv)
    config = render(
        args.out,
        backends=args.backend,
        listen=args.listen,
        keepalive=args.keepalive,
        source=args.source,
    )
    sys.stdout.write(f"{config}\n")


if __name__ == "__main__":
    main()
