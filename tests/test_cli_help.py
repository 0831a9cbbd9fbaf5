"""Every command of the CLI explains itself: help text on each, `--help` works on each."""

from __future__ import annotations

import pytest
import typer.main

from newsletter.cli import app

EXPECTED = [
    "init", "new", "add", "check", "build", "preview",
    "lists create", "lists ls", "lists rm",
    "subscribers add", "subscribers rm", "subscribers erase", "subscribers ls", "subscribers show",
    "subscribers count", "subscribers import", "subscribers export",
    "send", "sends ls", "sends show", "serve", "archive build", "events pull", "stats", "doctor",
]


def _walk(command, prefix: tuple[str, ...] = ()):
    yield prefix, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, prefix + (name,))


COMMANDS = list(_walk(typer.main.get_command(app)))


def test_the_contract_commands_exist():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert [c for c in EXPECTED if c not in names] == []


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) or "root" for p, _ in COMMANDS])
def test_every_command_has_help(cli, path, command):
    assert (command.help or "").strip(), f"{' '.join(path)} has no help text"
    result = cli(*path, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output
