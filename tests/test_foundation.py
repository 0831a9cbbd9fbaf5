"""The shared foundation: configuration, tokens, placeholders, migrations, the root command."""

from __future__ import annotations

import sqlite3

import pytest

from newsletter.config import load_config, load_secret
from newsletter.errors import ConfigError, StoreError, TokenError
from newsletter.render.rendered import PLACEHOLDER_RE, parse_placeholder, placeholder
from newsletter.store import db
from newsletter.tokens import make_token, verify_token


def test_config_defaults_without_a_file(tmp_path):
    config = load_config(cwd=tmp_path)
    assert config.file is None
    assert config.transport == "outbox"
    assert config.database_url == str(tmp_path.resolve() / "subscribers" / "subscribers.db")


def test_config_paths_are_relative_to_the_file(project, tmp_path):
    sub = project / "editions"
    sub.mkdir()
    config = load_config(cwd=sub)
    assert config.root == project.resolve()
    assert config.name == "Test Daily"
    assert config.from_domain == "example.com"


def test_env_database_url_wins(project, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", "sqlite:////tmp/x.db")
    assert load_config().database_url == "sqlite:////tmp/x.db"


@pytest.mark.parametrize(
    "text, message",
    [
        ('name = "x"\nbogus = 1\n', "unknown key 'bogus'"),
        ('transport = "pigeon"\n', "transport must be one of"),
        ("[send]\nconcurrency = \"many\"\n", "send.concurrency must be int"),
        ('name = "x\n', "invalid TOML"),
    ],
)
def test_config_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "newsletter.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_secret_env_wins_and_file_is_created(tmp_path, monkeypatch):
    config = load_config(cwd=tmp_path)
    told = []
    secret = load_secret(config, notify=told.append)
    assert len(secret) == 64 and told
    assert (tmp_path / ".newsletter-secret").stat().st_mode & 0o777 == 0o600
    assert load_secret(config) == secret
    monkeypatch.setenv("NEWSLETTER_SECRET", "s" * 32)
    assert load_secret(config) == b"s" * 32


UID = "0123456789abcdef0123456789abcdef"


def test_tokens_verify_and_refuse_tampering():
    secret = b"k" * 32
    token = make_token(secret, "unsubscribe", 42, 7, uid=UID)
    claims = verify_token(secret, "unsubscribe", token)
    assert (claims.subscriber_id, claims.list_id) == (42, 7)
    with pytest.raises(TokenError):
        verify_token(secret, "confirm", token)  # wrong purpose
    with pytest.raises(TokenError):
        verify_token(b"x" * 32, "unsubscribe", token)  # wrong secret
    forged = make_token(secret, "unsubscribe", 43, 7, uid=UID).split(".")[0] + "." + token.split(".")[1]
    with pytest.raises(TokenError):
        verify_token(secret, "unsubscribe", forged)
    with pytest.raises(TokenError):
        verify_token(secret, "unsubscribe", "garbage")
    payload, mac = token.split(".")
    for spelling in (f"{payload}!.{mac}", f"{payload}.{mac[:5]}*{mac[5:]}", f"{payload}.{mac}="):
        with pytest.raises(TokenError):  # one token, one spelling
            verify_token(secret, "unsubscribe", spelling)
    expiring = make_token(secret, "confirm", 1, 1, expires=1000, uid=UID)
    assert verify_token(secret, "confirm", expiring, now=999).expires == 1000
    with pytest.raises(TokenError, match="expired"):
        verify_token(secret, "confirm", expiring, now=1001)


def test_placeholders_round_trip():
    marker = placeholder("name", "朋友")
    assert marker.isascii()
    key, fallback = parse_placeholder(PLACEHOLDER_RE.fullmatch(marker))
    assert (key, fallback) == ("name", "朋友")
    assert parse_placeholder(PLACEHOLDER_RE.fullmatch(placeholder("attr.city"))) == ("attr.city", "")
    with pytest.raises(ValueError):
        placeholder("password")


def test_migrations_fresh_and_newer_than_code(tmp_path):
    path = tmp_path / "s.db"
    conn = db.connect(path)
    assert db.schema_version(conn) == db.latest_version()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    conn.execute(f"PRAGMA user_version = {db.latest_version() + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this program"):
        db.connect(path)


def test_migration_upgrade_from_an_older_version(tmp_path):
    path = tmp_path / "s.db"
    raw = sqlite3.connect(path)
    first = db.migrations()[0]
    raw.executescript(first[2])
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    conn = db.connect(path)
    assert db.schema_version(conn) == db.latest_version()


def test_root_command_help_and_version(cli):
    result = cli("--help")
    assert result.exit_code == 0 and "newsletter" in result.output.lower()
    assert cli("--version").output.startswith("newsletter ")
