"""Commands of this group register themselves on the root app (filled in by its issue)."""

import typer


def register(app: typer.Typer) -> None:
    return None
