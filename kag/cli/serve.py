"""`kag serve`: run the HTTP API with uvicorn over the stores in the data dir."""

from __future__ import annotations

import logging
import math
import os
import signal
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kag.errors import ConfigurationError, KagError
from kag.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI


def resolve_port(settings: Settings, option: int | None, environ: dict[str, str]) -> int:
    """--port, else KAG_API_PORT, else PORT (as platforms like Heroku or Cloud Run set it), else the default."""
    if option is not None:
        return option
    if "api_port" not in settings.model_fields_set and environ.get("PORT"):
        try:
            return int(environ["PORT"])
        except ValueError:
            raise ConfigurationError(f"PORT={environ['PORT']!r} is not a port number") from None
    return settings.api_port


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on; default: KAG_API_HOST.")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port; default: KAG_API_PORT, else $PORT, else 8000.", min=0, max=65535)
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the HTTP API (docs at /docs, audit review page at /ui/audit) until SIGTERM or Ctrl-C."""
    from kag.api import create_app

    try:
        settings = Settings()
        bind_port = resolve_port(settings, port, dict(os.environ))
    except KagError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    logging.getLogger("kag").setLevel(logging.INFO)
    app = create_app(settings)
    if not run_server(app, settings, host=host or settings.api_host, port=bind_port, log_level=log_level):
        # the lifespan failed (e.g. the data dir is locked): uvicorn logged why
        raise typer.Exit(1)


def run_server(app: FastAPI, settings: Settings, *, host: str, port: int, log_level: str = "info") -> bool:
    """Serve `app` with uvicorn until SIGTERM/SIGINT, drain, shut down; False if it never started.

    On the signal uvicorn stops accepting connections and in-flight requests run on for the drain window
    (KAG_API_SHUTDOWN_TIMEOUT_S, by default the request timeout); answers still generating after it stop,
    are audited as interrupted and answer a 503 in the error envelope, within INTERRUPT_GRACE_S. Only then
    would uvicorn cancel what is left (a plain-text 500), so with working stores no request ends that way.
    """
    import uvicorn

    from kag.api.services import INTERRUPT_GRACE_S, shutdown_drain_s

    drain_s = shutdown_drain_s(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=math.ceil(drain_s + INTERRUPT_GRACE_S),
        lifespan="on",
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            services = getattr(app.state, "services", None)
            if services is not None:
                # the ingestion job stops at its next safe point at once, while in-flight requests drain
                if hasattr(services, "worker"):
                    services.worker.request_stop()
                services.begin_shutdown(drain_s)
            super().handle_exit(sig, frame)

    server = Server(config)
    # uvicorn re-raises the SIGTERM/SIGINT it drained on, to end with the default action (killed by the
    # signal); a drained, clean stop is a success, so that last raise ends the process with status 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    server.run()
    return bool(server.started)
