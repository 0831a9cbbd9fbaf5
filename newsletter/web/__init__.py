"""The readers' web endpoints: subscribe, confirm, unsubscribe, preferences, archive and feed.

``create_app(config)`` builds the Starlette application; ``app`` is the ready-made ASGI entry point
for ``uvicorn newsletter.web:app`` and friends. It loads the configuration on its first event
(the file named by ``NEWSLETTER_CONFIG``, else the nearest ``newsletter.toml``), so importing
this module costs nothing and reads no files.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from newsletter.config import Config


def create_app(config: "Config") -> Any:
    """The Starlette application serving the reader URLs for ``config``."""
    from newsletter.web.app import build_app

    return build_app(config)


class LazyApp:
    """An ASGI app that builds the real one from the configuration on first use."""

    def __init__(self) -> None:
        self._app: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._app is None:
                from newsletter.config import load_config

                self._app = create_app(load_config(os.environ.get("NEWSLETTER_CONFIG") or None))
        return self._app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self._app is None and scope["type"] == "lifespan":
            from newsletter.errors import NewsletterError

            try:
                self._load()
            except NewsletterError as err:  # e.g. no secret: refuse to start, in one line
                await receive()  # lifespan.startup
                await send({"type": "lifespan.startup.failed", "message": str(err)})
                return
        app = self._app or self._load()
        await app(scope, receive, send)


app = LazyApp()

__all__ = ["app", "create_app", "LazyApp"]
