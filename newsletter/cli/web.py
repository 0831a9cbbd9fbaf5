"""`newsletter serve` (the readers' web endpoints) and `newsletter archive build`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from newsletter.cli.common import get_config, notice

archive_app = typer.Typer(help="The public archive of sent editions.", no_args_is_help=True)


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on (put a reverse proxy in front for the public).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="Log every request.")] = True,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, metavar="N",
                                         help="Worker processes sharing the port (each with its own database "
                                              "connections; rate limits and writes are shared through the database).")] = 1,
) -> None:
    """Serve the readers' pages: subscribe, confirm, unsubscribe, preferences, archive, feed."""
    import uvicorn

    from newsletter.config import load_secret
    from newsletter.web import create_app

    config = get_config(ctx)
    load_secret(config, notify=notice)  # made like every other command does, when missing
    app = create_app(config)  # checks the configuration here, once, whatever the workers
    if workers > 1:
        from newsletter.store.connection import connect

        connect(config).close()  # reachable and migrated before the workers start: one line if not
    sock = listen(host, port)  # bound here: a busy port is one line and exit 2, not uvicorn's
    many = f" with {workers} worker processes" if workers > 1 else ""
    notice(f"serving {config.name} on http://{host}:{port}{many} (public URL: {config.base_url})")
    # Client addresses from proxy headers are handled by the app itself (web.trust_proxy_headers),
    # so uvicorn must not rewrite them on its own.
    settings = dict(host=host, port=port, proxy_headers=False, access_log=access_log, log_level="info",
                    server_header=False)
    if workers == 1:
        server = uvicorn.Server(uvicorn.Config(app, **settings))
        with sock:
            server.run(sockets=[sock])
        return
    _serve_workers(config, sock, workers, settings)


def _serve_workers(config, sock, workers: int, settings: dict) -> None:
    """uvicorn's supervisor: ``workers`` processes (spawned) accept on the one socket bound here,
    each building the app from the same configuration (``newsletter.web:app`` reads the file
    ``NEWSLETTER_CONFIG`` names; ``NEWSLETTER_DATABASE_URL`` passes through the environment).
    SIGTERM or Ctrl-C stops them all; a worker that dies is started again."""
    import os

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    if config.file is not None:
        os.environ["NEWSLETTER_CONFIG"] = str(Path(config.file).resolve())
    supervisor = Multiprocess(uvicorn.Config("newsletter.web:app", workers=workers, **settings),
                              sockets=[sock])
    with sock:
        supervisor.run()


def listen(host: str, port: int):
    """A listening TCP socket on ``host:port``; ``NewsletterError`` (exit 2) when it cannot be."""
    import socket

    from newsletter.errors import NewsletterError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as err:
        raise NewsletterError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        hint = " (another server is using it: stop it or choose another --port)" if err.errno == 98 else ""
        raise NewsletterError(f"cannot listen on {host}:{port}: {err.strerror or err}{hint}") from None
    sock.set_inheritable(True)
    return sock


@archive_app.command("build")
def archive_build(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write the static archive into.",
                                         file_okay=False)],
) -> None:
    """Write the archive pages and the Atom feed as static files for any static host."""
    from newsletter.web.archive import build_archive

    config = get_config(ctx)
    written = build_archive(config, output, progress=lambda slug: notice(f"archived {slug}"))
    editions = sum(1 for p in written if p.name == "index.html" and p.parent.parent.name == "archive")
    notice(f"wrote {len(written)} files ({editions} editions) to {output}")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(archive_app, name="archive")
