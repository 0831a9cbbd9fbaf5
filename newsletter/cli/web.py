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
) -> None:
    """Serve the readers' pages: subscribe, confirm, unsubscribe, preferences, archive, feed."""
    import uvicorn

    from newsletter.config import load_secret
    from newsletter.web import create_app

    config = get_config(ctx)
    load_secret(config, notify=notice)  # made like every other command does, when missing
    app = create_app(config)
    sock = listen(host, port)  # bound here: a busy port is one line and exit 2, not uvicorn's
    notice(f"serving {config.name} on http://{host}:{port} (public URL: {config.base_url})")
    # Client addresses from proxy headers are handled by the app itself (web.trust_proxy_headers),
    # so uvicorn must not rewrite them on its own.
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, proxy_headers=False,
                                           access_log=access_log, log_level="info", server_header=False))
    with sock:
        server.run(sockets=[sock])


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
