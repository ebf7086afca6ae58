"""`turnkeep emulate`: serve the offline Messages API emulator on loopback."""

from __future__ import annotations

import click

__all__ = ["emulate"]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (keep it loopback).")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option(
    "--clock",
    type=click.Choice(["real", "virtual"]),
    default="real",
    show_default=True,
    help="virtual: time moves only via POST /_emulator/clock or the x-emulator-advance header.",
)
@click.option(
    "--responder",
    type=click.Choice(["recall", "echo", "scripted"]),
    default="recall",
    show_default=True,
    help="Default reply mode (a request can pick another with the x-emulator-responder header).",
)
@click.option(
    "--fault-rate",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Fraction of requests that fail with a random retryable status (429, 500, 504, 529).",
)
@click.option("--seed", type=int, default=None, help="Seed of the random faults, for reproducible soak runs.")
def emulate(host: str, port: int, clock: str, responder: str, fault_rate: float, seed: int | None) -> None:
    """Serve an offline emulator of Anthropic's Messages API until interrupted.

    Point any Claude client at it with a base URL and any non-empty key:

    \b
        turnkeep emulate --port 8787 --clock virtual &
        export ANTHROPIC_BASE_URL=http://127.0.0.1:8787 ANTHROPIC_API_KEY=test-key
        curl -s $ANTHROPIC_BASE_URL/v1/models -H "x-api-key: $ANTHROPIC_API_KEY"

    Replies come from the request's own context ("recall"), so "My name is Ada." then "What is my name?"
    answers "Your name is Ada." Usage and cost are billed like the real API: GET /_emulator/bill.
    See docs/emulator.md for every control endpoint and header.
    """
    import uvicorn

    from turnkeep.emulator.app import create_app, quiet_deliberate_drops
    from turnkeep.serving import listening_socket, uvicorn_config

    app = create_app(clock=clock, responder=responder, fault_rate=fault_rate, seed=seed)
    try:
        sock = listening_socket(host, port)
    except OSError as err:
        raise click.UsageError(f"cannot listen on {host}:{port}: {err.strerror or err}") from err
    bound_port = sock.getsockname()[1]
    # Listen before saying so: a client that connects as soon as it reads the line must not be refused.
    sock.listen(2048)
    config = uvicorn_config(app, lifespan="off")
    quiet_deliberate_drops()
    try:
        # Inside the try: a Ctrl-C right after the banner, before uvicorn handles signals, stops just as cleanly.
        click.echo(
            f"turnkeep emulator listening on http://{host}:{bound_port} (clock: {clock}, responder: {responder})"
        )
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        # uvicorn finishes the requests in flight, then re-raises the Ctrl-C it caught: that is the normal way out.
        click.echo("turnkeep emulator stopped.", err=True)
    finally:
        sock.close()
