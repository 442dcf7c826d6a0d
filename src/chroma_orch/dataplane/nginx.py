"""Writes a ready-to-run Nginx configuration from ``deploy/nginx.conf``.

``deploy/nginx.conf`` and the njs script beside it (``chroma-orch.js``) are used
as they are; what differs per site lives in the four files nginx.conf includes
from its own directory, which this writes:

    python -m chroma_orch.dataplane.nginx --backend 127.0.0.1:8080 --listen 8000 \
        --tenant-ports 30000-30999 --out DIR
    nginx -c DIR/nginx.conf -p DIR

``--tenant-ports`` (the local runtime's ``CHROMA_ORCH_LOCAL__PORT_RANGE``) gives
every port of the range its own ``upstream`` with a ``keepalive`` pool, so
requests to a local tenant server reuse connections (Nginx keeps none for an
address it only learns from a variable). Addresses outside it (ECS) are proxied
as before, a connection per request.

``--backend`` may be repeated (one per service replica). The workers run as
``--user`` (``nobody`` by default; a dedicated account is better). The njs module
(Debian: ``apt-get install libnginx-mod-http-js``) is looked for in the usual
module directories unless ``--modules-dir`` names one.
"""

from __future__ import annotations

import argparse
import grp
import pwd
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

CONFIG = "nginx.conf"
SCRIPT = "chroma-orch.js"
MAIN_INCLUDE = "chroma-orch-main.conf"
UPSTREAM_INCLUDE = "chroma-orch-upstream.conf"
LISTEN_INCLUDE = "chroma-orch-listen.conf"
TENANTS_INCLUDE = "chroma-orch-tenants.conf"
# A replica that failed is skipped for 2 s only (Nginx's default: 10 s), so one
# restarted in the meantime is asked again before the next replica goes down.
BACKEND_FAILS = "max_fails=1 fail_timeout=2s"
JS_MODULE = "ngx_http_js_module.so"
MODULE_DIRS = (
    "/usr/lib/nginx/modules",  # Debian, Ubuntu, Alpine, nginx.org packages
    "/usr/lib64/nginx/modules",  # Fedora, RHEL
    "/usr/local/lib/nginx/modules",
    "/usr/local/nginx/modules",  # built from source
    "/etc/nginx/modules",
)


def default_source() -> Path:
    """``deploy/nginx.conf`` of the source tree this package runs from."""
    return Path(__file__).resolve().parents[3] / "deploy" / CONFIG


def find_js_module(modules_dir: Path | None = None) -> Path:
    """The njs module (``ngx_http_js_module.so``) in ``modules_dir``, or else in
    the first of ``MODULE_DIRS`` that has it."""
    dirs = [modules_dir] if modules_dir is not None else [Path(d) for d in MODULE_DIRS]
    for directory in dirs:
        if (directory / JS_MODULE).is_file():
            return directory / JS_MODULE
    raise FileNotFoundError(
        f"{JS_MODULE} not found in {', '.join(map(str, dirs))}: install Nginx's njs module "
        "(Debian: apt-get install libnginx-mod-http-js) or pass its directory (--modules-dir)"
    )


def worker_user(user: str, group: str | None = None) -> str:
    """``user group`` for Nginx's ``user`` directive; ``group`` defaults to the
    user's primary group (``nogroup`` for ``nobody`` on Debian, ``nobody`` on RHEL)."""
    if group is None:
        try:
            group = grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
        except KeyError as exc:
            raise ValueError(f"no local user or group for {user!r}: name the group") from exc
    return f"{user} {group}"


def parse_ports(value: str) -> range:
    """``LOW-HIGH`` (inclusive) as a range of ports."""
    low, _, high = value.partition("-")
    try:
        ports = range(int(low), int(high or low) + 1)
    except ValueError as exc:
        raise ValueError(f"ports must be LOW-HIGH, not {value!r}") from exc
    if not ports or ports.start < 1 or ports.stop > 65536:
        raise ValueError(f"ports must be LOW-HIGH within 1-65535, not {value!r}")
    return ports


def tenant_pools(host: str, ports: range | None, keepalive: int = 4) -> str:
    """The tenants include: ``$chroma_orch_peer`` is a pool's name for an address
    of ``host`` in ``ports`` (one ``upstream`` per port, with idle connections
    kept), else the address itself (a connection per request)."""
    ports = ports or range(0)
    names = "".join(f"    {host}:{port} chroma_orch_tenant_{port};\n" for port in ports)
    pools = "".join(
        f"upstream chroma_orch_tenant_{port} {{\n"
        f"    server {host}:{port} max_fails=0;\n"
        f"    keepalive {keepalive};\n"
        "    keepalive_timeout 10s;\n"
        "}\n"
        for port in ports
    )
    return (
        "# Connection pools for the local runtime's tenant servers (generated).\n"
        "map $chroma_orch_upstream $chroma_orch_peer {\n"
        f"    default $chroma_orch_upstream;\n{names}}}\n{pools}"
    )


def render(
    out_dir: Path,
    *,
    backends: Sequence[str],
    listen: Sequence[str],
    keepalive: int = 64,
    tenant_host: str = "127.0.0.1",
    tenant_ports: range | None = None,
    source: Path | None = None,
    user: str = "nobody",
    group: str | None = None,
    modules_dir: Path | None = None,
) -> Path:
    """Copy the configuration into ``out_dir`` with its includes; returns its path.

    ``backends`` are ``host:port`` of service replicas; ``listen`` are arguments
    of Nginx ``listen`` directives (``8000``, ``127.0.0.1:8000``, ``443 ssl``);
    ``user`` and ``group`` are the workers' (when the master runs as root);
    ``tenant_ports`` on ``tenant_host``: the local runtime's servers, given
    connection pools (see ``tenant_pools``).
    """
    if not backends or not listen:
        raise ValueError("at least one backend and one listen address are needed")
    source = source or default_source()
    if not source.is_file():
        raise FileNotFoundError(f"{source} not found (pass source=/path/to/deploy/nginx.conf)")
    main = f"user {worker_user(user, group)};\nload_module {find_js_module(modules_dir)};\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    config = out_dir / CONFIG
    shutil.copyfile(source, config)
    shutil.copyfile(source.parent / SCRIPT, out_dir / SCRIPT)
    (out_dir / MAIN_INCLUDE).write_text(main)
    servers = "".join(f"    server {backend} {BACKEND_FAILS};\n" for backend in backends)
    (out_dir / UPSTREAM_INCLUDE).write_text(
        f"upstream chroma_orch_backend {{\n{servers}    keepalive {keepalive};\n}}\n"
    )
    (out_dir / LISTEN_INCLUDE).write_text("".join(f"listen {item};\n" for item in listen))
    (out_dir / TENANTS_INCLUDE).write_text(tenant_pools(tenant_host, tenant_ports))
    return config


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backend", action="append", required=True, help="host:port of a replica")
    parser.add_argument("--listen", action="append", required=True, help="Nginx listen argument")
    parser.add_argument("--out", type=Path, required=True, help="directory to write")
    parser.add_argument("--source", type=Path, default=None, help="deploy/nginx.conf to copy")
    parser.add_argument("--keepalive", type=int, default=64, help="idle backend connections")
    parser.add_argument(
        "--tenant-ports",
        type=parse_ports,
        default=None,
        help="LOW-HIGH: the local runtime's port range (connection pools per port)",
    )
    parser.add_argument(
        "--tenant-host", default="127.0.0.1", help="the local runtime's server address"
    )
    parser.add_argument("--user", default="nobody", help="the workers' user (default nobody)")
    parser.add_argument("--group", default=None, help="the workers' group (default: the user's)")
    parser.add_argument(
        "--modules-dir", type=Path, default=None, help=f"directory holding {JS_MODULE}"
    )
    args = parser.parse_args(argv)
    config = render(
        args.out,
        backends=args.backend,
        listen=args.listen,
        keepalive=args.keepalive,
        tenant_host=args.tenant_host,
        tenant_ports=args.tenant_ports,
        source=args.source,
        user=args.user,
        group=args.group,
        modules_dir=args.modules_dir,
    )
    sys.stdout.write(f"{config}\n")


if __name__ == "__main__":
    main()
