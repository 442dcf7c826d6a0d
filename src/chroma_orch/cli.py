"""The ``chroma-orch`` command (typer): run the service (serve, migrate,
rotate-admin-token, settings) or talk to a running one (instances, tenants, tokens,
see ``cli_client``)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.markup import escape

from chroma_orch import cli_import
from chroma_orch.cli_client import app as client
from chroma_orch.cli_client import instance_commands
from chroma_orch.cli_client.exits import EXIT_CODES
from chroma_orch.settings import Settings

IMPORTANT_SETTINGS = (
    "database_url",
    "data_dir",
    "host",
    "port",
    "admin_token",
    "runtime",
    "public_url",
    "local.port_range",
    "local.launcher",
    "reconciler.enabled",
)


def settings_help(model: type[BaseModel] = Settings, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted name, "ENV_VAR  description") for every setting, nested groups included."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from settings_help(annotation, f"{prefix}{name}.")
            continue
        env = "CHROMA_ORCH_" + f"{prefix}{name}".replace(".", "__").upper()
        yield f"{prefix}{name}", f"{env}\n      {field.description or ''}"


def _epilog(names: Sequence[str]) -> str:
    docs = dict(settings_help())
    lines = ["important settings (environment variables; see README for all):"]
    lines += [f"  {docs[name]}" for name in names]
    return escape("\n".join(lines))


app = typer.Typer(
    name="chroma-orch",
    help="Run the chroma-orch service (serve, migrate, rotate-admin-token, "
    "settings) or talk to a running one (instances, tenants, tokens).",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    result_callback=client.finished,
    context_settings={"help_option_names": ["-h", "--help"]},
)
cli_import.register(instance_commands.app)
client.add_client_commands(app)


def _option(help_: str) -> Any:
    return typer.Option(help=help_, show_default=False)


@app.command("serve", help="run the service", epilog=_epilog(IMPORTANT_SETTINGS))
def serve_command(
    host: Annotated[
        str | None, _option("listen address (CHROMA_ORCH_HOST, default 127.0.0.1)")
    ] = None,
    port: Annotated[int | None, _option("listen port (CHROMA_ORCH_PORT, default 8080)")] = None,
    data_dir: Annotated[str | None, _option("state directory (CHROMA_ORCH_DATA_DIR)")] = None,
    database_url: Annotated[
        str | None, _option("PostgreSQL URL (CHROMA_ORCH_DATABASE_URL)")
    ] = None,
    log_level: Annotated[str | None, _option("log level (CHROMA_ORCH_LOG_LEVEL)")] = None,
) -> int:
    given: dict[str, Any] = {"host": host, "port": port, "data_dir": data_dir}
    given |= {"database_url": database_url, "log_level": log_level}
    serve(Settings(**{key: value for key, value in given.items() if value is not None}))
    return 0


@app.command("migrate", help="apply database migrations and exit")
def migrate_command() -> int:
    settings = Settings()
    _configure_logging(settings)
    asyncio.run(_with_database(settings, "migrate"))
    sys.stdout.write("database is at the latest migration\n")
    return 0


@app.command("rotate-admin-token", help="revoke admin tokens and print a new one")
def rotate_command() -> int:
    settings = Settings()
    _configure_logging(settings)
    secret = asyncio.run(_with_database(settings, "rotate"))
    sys.stdout.write(f"{secret}\n")
    return 0


@app.command("settings", help="list every setting with its environment variable")
def settings_command() -> int:
    for _, doc in settings_help():
        sys.stdout.write(doc + "\n")
    return 0


ecs_app = typer.Typer(
    help="the ECS runtime's AWS side (docs/ecs.md)",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(ecs_app, name="ecs")


@ecs_app.command(
    "check",
    help="check the cluster, subnets, security groups, log group, roles, task size and "
    "image the CHROMA_ORCH_ECS__* settings name; one line per problem, exit 1 on errors",
)
def ecs_check_command() -> int:
    from chroma_orch.runtimes.ecs.checks import check

    settings = Settings()
    problems = asyncio.run(check(settings.ecs))
    for problem in problems:
        sys.stdout.write(problem.line() + "\n")
    if not problems:
        sys.stdout.write(f"ecs check passed (cluster {settings.ecs.cluster})\n")
    return 1 if any(p.severity == "error" for p in problems) else 0


def _configure_logging(settings: Settings) -> None:
    from chroma_orch.telemetry.log_setup import configure_logging

    configure_logging(settings.log_level, settings.log_format)


def serve(settings: Settings) -> None:
    import uvicorn

    from chroma_orch.app import create_app
    from chroma_orch.http_server import header_timeout_protocol

    _configure_logging(settings)
    sys.stderr.write(
        f"chroma-orch starting on {settings.base_url}  (API docs: {settings.base_url}/docs)\n"
        f"  data directory: {settings.data_dir}\n"
        f"  database: {'external' if settings.database_url else 'embedded PostgreSQL'}\n"
    )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        http=header_timeout_protocol(settings.header_timeout),
        log_level=settings.log_level.lower(),
        log_config=None,  # keep our handlers (request ids, JSON) for uvicorn's lines too
        lifespan="on",
        proxy_headers=False,  # the app trusts only Settings.trusted_proxies' forwarding
    )
    uvicorn.Server(config).run()


async def _with_database(settings: Settings, action: str) -> str | None:
    from chroma_orch.app import start_embedded_database
    from chroma_orch.db.migrate import upgrade
    from chroma_orch.db.outbox import commit
    from chroma_orch.db.session import create_engine, create_session_factory
    from chroma_orch.db.statements import check_engine
    from chroma_orch.domain.tenants import rotate_admin_token

    async with AsyncExitStack() as stack:
        url = settings.database_url or await start_embedded_database(settings, stack)
        engine = create_engine(url)
        stack.push_async_callback(engine.dispose)
        await upgrade(engine)
        await check_engine(engine)  # every statement of this release fits the schema
        if action == "rotate":
            async with create_session_factory(engine)() as session:
                secret = await rotate_admin_token(session)
                await commit(session)
            return secret
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``chroma-orch ARGV``; returns the exit code (``--help`` and usage errors exit)."""
    return client.execute(app, argv, "chroma-orch")


if __name__ == "__main__":
    sys.exit(main())
