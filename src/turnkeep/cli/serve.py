"""`turnkeep serve` (the gateway) and `turnkeep keys` (its tenants' keys)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path

import click

__all__ = ["keys", "serve"]


def _database(database: str | None) -> str | Path:
    """Where conversations and tenants are: `--database`/`--db` of the command, else `turnkeep --db`, else
    `$TURNKEEP_DATABASE_URL`, else the default SQLite file (as every other command finds its store)."""
    from turnkeep.config import store_location
    from turnkeep.store.postgres import is_url

    if database is None:
        context = click.get_current_context(silent=True)
        root = context.find_root().obj if context is not None else None
        database = getattr(root, "db", None)
    location = store_location(database)
    return str(location) if is_url(str(location)) else Path(location).expanduser()


_DATABASE = click.option(
    "--database",
    "--db",
    "database",
    default=None,
    metavar="FILE|URL",
    help="Conversations and tenants: a SQLite file or a postgresql:// URL shared by replicas (default: "
    "$TURNKEEP_DATABASE_URL, else $TURNKEEP_HOME/turnkeep.db).",
)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8788, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@_DATABASE
@click.option(
    "--upstream",
    default=None,
    help="Base URL of the Messages API (default: $ANTHROPIC_BASE_URL, else Anthropic's), or 'emulator' for the "
    "offline emulator in this process.",
)
@click.option("--policy", default=None, help="Context policy of new threads, e.g. window:20 (default: full-history).")
@click.option("--max-request-mb", default=32, show_default=True, type=click.IntRange(1, 1024), help="413 above this.")
@click.option("--body-timeout", default=30.0, show_default=True, type=click.FloatRange(0.1), help="Seconds (408).")
@click.option(
    "--upstream-retries", default=0, show_default=True, type=click.IntRange(0, 10), help="Retries of upstream calls."
)
@click.option("--access-log/--no-access-log", default=True, show_default=True, help="One JSON line per request.")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Processes serving the port; they share the database as replicas do.",
)
@click.option(
    "--lease-seconds",
    default=60.0,
    show_default=True,
    type=click.FloatRange(1),
    help="A continue's hold on its conversation, renewed while it runs; a replica killed mid-turn frees it "
    "after this long.",
)
@click.option(
    "--shutdown-seconds",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0),
    help="On SIGTERM or Ctrl-C, how long requests in flight (streams too) may take to finish.",
)
def serve(
    host: str,
    port: int,
    database: str | None,
    upstream: str | None,
    policy: str | None,
    max_request_mb: int,
    body_timeout: float,
    upstream_retries: int,
    access_log: bool,
    workers: int,
    lease_seconds: float,
    shutdown_seconds: float,
) -> None:
    """Serve the gateway: the Messages API with durable message threads, for any client and language.

    The upstream key comes from ANTHROPIC_API_KEY and never leaves this process. Create a key for each tenant
    with `turnkeep keys create --tenant NAME`, then point any SDK at the gateway:

    \b
        turnkeep serve --upstream emulator --port 8788 &
        export ANTHROPIC_BASE_URL=http://127.0.0.1:8788 ANTHROPIC_API_KEY=$(turnkeep keys create --tenant me)

    Replicas (other processes, other machines) share one PostgreSQL database: `--db postgresql://…` or
    TURNKEEP_DATABASE_URL, for `serve` and `keys` alike; `--workers N` runs N processes on this port.

    See docs/gateway.md for threads, tenants, limits, replicas and operations.
    """
    import os

    import uvicorn

    from turnkeep.errors import UsageError
    from turnkeep.server.app import GatewayConfig, create_app
    from turnkeep.server.runner import (
        EMULATOR_UPSTREAM_KEY,
        WORKER_VARIABLE,
        build_gateway,
        close_stores,
        log_access,
        worker_spec,
    )
    from turnkeep.serving import listening_socket, uvicorn_config

    emulator = None
    options = {
        "max_request_bytes": max_request_mb * 1024 * 1024,
        "body_timeout": body_timeout,
        "upstream_retries": upstream_retries,
        "default_policy": policy,
        "lease_seconds": lease_seconds,
    }
    if upstream == "emulator":
        from turnkeep.emulator import EmulatorServer

        emulator = EmulatorServer().start()
        config = GatewayConfig(upstream_url=emulator.base_url, upstream_key=EMULATOR_UPSTREAM_KEY, **options)  # type: ignore[arg-type]
    else:
        config = GatewayConfig.from_env(upstream_url=upstream, **options)
    if policy is not None:
        from turnkeep.cli._runtime import parse_policy

        parse_policy(policy)  # a bad spelling stops here, not at the first request
    try:
        location = _database(database)
        gateway = build_gateway(location, config)  # opens (and migrates) the database, so its errors come first
        try:
            sock = listening_socket(host, port)
        except OSError as err:
            raise UsageError(f"cannot listen on {host}:{port}: {err.strerror or err}") from err
        if access_log:
            log_access()
        where = "the in-process emulator" if emulator is not None else config.upstream_url
        click.echo(
            f"turnkeep gateway listening on http://{host}:{sock.getsockname()[1]} (upstream: {where}"
            + (f", {workers} workers)" if workers > 1 else ")")
        )
        try:
            if workers == 1:
                settings = uvicorn_config(
                    create_app(gateway), lifespan="on", timeout_graceful_shutdown=shutdown_seconds
                )
                uvicorn.Server(settings).run(sockets=[sock])
            else:
                from uvicorn.supervisors import Multiprocess

                close_stores(gateway)  # each worker opens its own
                os.environ[WORKER_VARIABLE] = worker_spec(location, config, access_log=access_log)
                settings = uvicorn_config(
                    "turnkeep.server.runner:worker_app",
                    lifespan="on",
                    factory=True,
                    workers=workers,
                    timeout_graceful_shutdown=shutdown_seconds,
                )
                Multiprocess(settings, sockets=[sock]).run()
        finally:
            sock.close()
    finally:
        if emulator is not None:
            emulator.stop()


@click.group()
def keys() -> None:
    """Gateway keys of tenants: create (printed once), list, revoke.

    \b
        turnkeep keys create --tenant acme --usd-per-day 5
        turnkeep keys list
    """


def _usd(value: str | None, name: str) -> Decimal | None:
    if value is None:
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise click.BadParameter(f"{value!r} is not an amount in USD", param_hint=name) from None
    if not amount.is_finite() or amount < 0:
        raise click.BadParameter(f"{value!r} is not an amount in USD", param_hint=name)
    return amount


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant the key belongs to (created if new).")
@_DATABASE
@click.option("--usd-per-day", default=None, help="Budget per UTC day; 429 once spent.")
@click.option("--usd-per-month", default=None, help="Budget per calendar month; 429 once spent.")
@click.option("--requests-per-minute", type=click.IntRange(1), default=None, help="Rate limit; 429 above it.")
@click.option("--tokens-per-minute", type=click.IntRange(1), default=None, help="Rate limit; 429 above it.")
@click.option("--policy", default=None, help="The tenant's context policy for new threads, e.g. window:20.")
def create_key(
    tenant: str,
    database: str | None,
    usd_per_day: str | None,
    usd_per_month: str | None,
    requests_per_minute: int | None,
    tokens_per_minute: int | None,
    policy: str | None,
) -> None:
    """Create a key for TENANT and print it (only now: the gateway keeps its hash).

    \b
        turnkeep keys create --tenant acme --usd-per-day 5 --requests-per-minute 60

    Limits given here replace the tenant's limits; without any, an existing tenant keeps its own.
    """
    import time

    from turnkeep.server.tenancy import Limits, Tenant, new_key, open_tenancy

    if policy is not None:
        from turnkeep.cli._runtime import parse_policy

        parse_policy(policy)
    limits = Limits(
        _usd(usd_per_day, "--usd-per-day"),
        _usd(usd_per_month, "--usd-per-month"),
        requests_per_minute,
        tokens_per_minute,
    )
    tenancy = open_tenancy(_database(database))
    try:
        existing = tenancy.tenant(tenant)
        if existing is None or limits != Limits() or policy is not None:
            tenancy.put_tenant(
                Tenant(
                    tenant,
                    limits if limits != Limits() or existing is None else existing.limits,
                    policy if policy is not None else (existing.policy if existing else None),
                )
            )
        key = new_key()
        tenancy.add_key(tenant, key, now=time.time())
    finally:
        tenancy.close()
    click.echo(key)


@keys.command("list")
@_DATABASE
@click.option("--tenant", default=None, help="Only this tenant's keys.")
def list_keys(database: str | None, tenant: str | None) -> None:
    """List keys by their prefix (the keys themselves are not stored)."""
    import time

    from turnkeep.server.tenancy import open_tenancy

    tenancy = open_tenancy(_database(database))
    try:
        for info in tenancy.keys(tenant):
            created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(info.created_at))
            state = "revoked" if info.revoked else "active"
            click.echo(f"{info.prefix}…  {info.tenant}  {created}  {state}")
    finally:
        tenancy.close()


@keys.command("revoke")
@click.argument("prefix")
@_DATABASE
def revoke_key(prefix: str, database: str | None) -> None:
    """Revoke the key(s) starting with PREFIX (as `turnkeep keys list` shows it)."""
    import time

    from turnkeep.errors import UsageError
    from turnkeep.server.tenancy import open_tenancy

    tenancy = open_tenancy(_database(database))
    try:
        count = tenancy.revoke_key(prefix.rstrip("…"), now=time.time())
    finally:
        tenancy.close()
    if count == 0:
        raise UsageError(f"no active key starts with {prefix!r}")
    click.echo(f"revoked {count} key{'s' if count != 1 else ''}")
