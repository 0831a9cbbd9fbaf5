"""What every command needs: the configuration, the store, stderr messages."""

from __future__ import annotations

import sys

import typer

from newsletter.config import Config, load_config


def get_config(ctx: typer.Context) -> Config:
    """The configuration for this invocation (``--config`` or the nearest file), loaded once."""
    root = ctx.find_root()
    obj = root.obj if isinstance(root.obj, dict) else {}
    if "config" not in obj:
        obj["config"] = load_config(obj.get("config_path"))
        root.obj = obj
    return obj["config"]


def notice(message: str) -> None:
    """A message for the person at the terminal, on stderr (stdout stays for data)."""
    typer.echo(message, err=True)


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()
