"""`newsletter lists …` and `newsletter subscribers …` through CliRunner, on a real project
whose database is SQLite or PostgreSQL (the ``news`` fixture runs each test on both)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from newsletter.config import load_config
from newsletter.store import open_store


@pytest.fixture
def news(backend_project, cli):
    result = cli("lists", "create", "news", "--description", "Daily news", "--public")
    assert result.exit_code == 0, result.output
    return backend_project


def test_lists_create_ls_json_and_rm(news, cli):
    assert cli("lists", "create", "weekly", "--double-opt-in").exit_code == 0
    again = cli("lists", "create", "news")
    assert again.exit_code == 2 and "already exists" in again.stderr
    cli("subscribers", "add", "a@example.com", "--list", "news")
    table = cli("lists", "ls")
    assert table.exit_code == 0
    line = next(l for l in table.stdout.splitlines() if l.startswith("news"))
    assert line.split()[:6] == ["news", "single", "yes", "1", "0", "0"] and "Daily news" in line
    data = json.loads(cli("lists", "ls", "--json").stdout)
    assert [(d["name"], d["optin"], d["active"]) for d in data] == [("news", "single", 1),
                                                                    ("weekly", "double", 0)]
    refused = cli("lists", "rm", "weekly")  # no terminal, no --yes
    assert refused.exit_code == 2 and "--yes" in refused.stderr
    assert cli("lists", "rm", "weekly", "--yes").exit_code == 0
    missing = cli("lists", "rm", "weekly", "--yes")
    assert missing.exit_code == 2 and "no such list 'weekly'" in missing.stderr
    assert cli("lists", "create", "bad name").exit_code == 2


def test_add_show_count_rm_and_resubscribe(news, cli):
    added = cli("subscribers", "add", "Ada@Example.com", "--name", "Ada", "--list", "news",
                "--attr", "city=Paris", "--attr", "lang=fr")
    assert added.exit_code == 0 and "added Ada@Example.com" in added.stderr
    shown = cli("subscribers", "show", "ada@example.com")
    assert shown.exit_code == 0
    assert "Ada@Example.com" in shown.stdout and "attr city:" in shown.stdout
    assert "news (active" in shown.stdout
    as_json = json.loads(cli("subscribers", "show", "ADA@example.com", "--json").stdout)
    assert as_json["attributes"] == {"city": "Paris", "lang": "fr"}
    assert cli("subscribers", "count", "--list", "news").stdout.strip() == "1"
    removed = cli("subscribers", "rm", "ada@example.com", "--list", "news")
    assert removed.exit_code == 0 and "unsubscribed Ada@Example.com from news" in removed.stderr
    assert cli("subscribers", "count", "--list", "news", "--status", "active").stdout.strip() == "0"
    kept = cli("subscribers", "add", "ada@example.com", "--list", "news")
    assert kept.exit_code == 1 and "consent" in kept.stderr and "--resubscribe" in kept.stderr
    back = cli("subscribers", "add", "ada@example.com", "--list", "news", "--resubscribe")
    assert back.exit_code == 0, back.output
    assert cli("subscribers", "count", "--list", "news", "--status", "active").stdout.strip() == "1"
    cli("subscribers", "rm", "ada@example.com")
    assert cli("subscribers", "count", "--status", "unsubscribed").stdout.strip() == "1"


@pytest.mark.parametrize("args, message", [
    (("subscribers", "add", "jörg@example.com"), "must be ASCII"),
    (("subscribers", "add", "not-an-address"), "not a valid email address"),
    (("subscribers", "add", "a@example.com", "--list", "nope"), "no such list 'nope'"),
    (("subscribers", "add", "a@example.com", "--attr", "novalue"), "expected KEY=VALUE"),
    (("subscribers", "add", "a@example.com", "--attr", "email=x"), "reserved"),
    (("subscribers", "show", "nobody@example.com"), "no subscriber"),
    (("subscribers", "rm", "nobody@example.com"), "no subscriber"),
    (("subscribers", "ls", "--list", "nope"), "no such list"),
    (("subscribers", "export", "--format", "xml"), "csv or jsonl"),
])
def test_bad_input_is_one_line_and_exit_2(news, cli, args, message):
    result = cli(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_add_strips_control_characters_and_says_so(news, cli):
    result = cli("subscribers", "add", "a@example.com", "--name", "Evil\r\nBcc: x", "--list", "news")
    assert result.exit_code == 0 and "stripped control characters from name" in result.stderr
    assert json.loads(cli("subscribers", "show", "a@example.com", "--json").stdout)["name"] == "Evil Bcc: x"


def test_erase_deletes_and_blocks_future_imports(news, cli):
    cli("subscribers", "add", "gone@example.com", "--name", "Gone", "--list", "news")
    erased = cli("subscribers", "erase", "Gone@Example.com")
    assert erased.exit_code == 0 and "erased" in erased.stderr
    assert cli("subscribers", "show", "gone@example.com").exit_code == 2
    Path("again.csv").write_text("email,name\ngone@example.com,Gone\n", encoding="utf-8")
    result = cli("subscribers", "import", "again.csv", "--list", "news")
    assert result.exit_code == 0
    assert "added 0" in result.stdout and "kept-by-consent 1" in result.stdout


def test_ls_table_and_json_lines(news, cli):
    for e in ("a@example.com", "b@bücher.de"):
        cli("subscribers", "add", e, "--list", "news")
    table = cli("subscribers", "ls", "--list", "news").stdout.splitlines()
    assert len(table) == 2 and "b@bücher.de" in table[1]
    lines = [json.loads(l) for l in cli("subscribers", "ls", "--json").stdout.splitlines()]
    assert [(l["id"], l["email"], l["status"]) for l in lines] == [
        (1, "a@example.com", "active"), (2, "b@bücher.de", "active")]
    assert cli("subscribers", "ls", "--status", "bogus").exit_code == 2


def test_import_summary_rejects_file_and_exit_code(news, cli):
    Path("in.csv").write_bytes(
        "\ufeffEmail,NAME,City\r\nA@example.com,\"Smith, A\",Paris\r\n\r\n"
        "a@EXAMPLE.com,,Rome\r\nbad@,x,y\r\njörg@example.com,J,\r\nz@bücher.de,\"Z\nZ\",\r\n"
        .encode("utf-8"))
    result = cli("subscribers", "import", "in.csv", "--list", "news", "--rejects", "rejects.csv")
    assert result.exit_code == 1  # done, but some rows were rejected
    assert result.stdout.strip() == ("added 2, updated 0, unchanged 0, duplicates 1, "
                                     "rejected 2, kept-by-consent 0")
    assert "in.csv:5: rejected" in result.stderr and "in.csv:6: rejected" in result.stderr
    assert "control characters were stripped" in result.stderr
    rows = list(csv.reader(open("rejects.csv", encoding="utf-8")))
    assert rows[0] == ["line", "email", "reason"]
    assert [(r[0], r[1]) for r in rows[1:]] == [("5", "bad@"), ("6", "jörg@example.com")]
    again = cli("subscribers", "import", "in.csv", "--list", "news", "--json")
    summary = json.loads(again.stdout)
    assert (summary["added"], summary["unchanged"], summary["duplicates"]) == (0, 2, 1)


def test_import_bad_file_writes_nothing_not_even_rejects(news, cli):
    Path("bad.csv").write_bytes(b"email,name\nok@example.com,A\nbad,x\nb@example.com,\xff\n")
    result = cli("subscribers", "import", "bad.csv", "--list", "news", "--rejects", "r.csv")
    assert result.exit_code == 2
    assert "bad.csv:4: is not UTF-8 text" in result.stderr
    assert not Path("r.csv").exists() and not Path("r.csv.part").exists()
    assert cli("subscribers", "count").stdout.strip() == "0"
    Path("noemail.csv").write_text("name\nA\n", encoding="utf-8")
    missing = cli("subscribers", "import", "noemail.csv", "--list", "news")
    assert missing.exit_code == 2 and "noemail.csv:1: no 'email' column" in missing.stderr
    gone = cli("subscribers", "import", "absent.csv", "--list", "news")
    assert gone.exit_code == 2 and "cannot read" in gone.stderr


def test_import_dry_run(news, cli):
    Path("in.csv").write_text("email\na@example.com\n", encoding="utf-8")
    result = cli("subscribers", "import", "in.csv", "--list", "news", "--dry-run")
    assert result.exit_code == 0 and result.stdout.startswith("dry run, nothing written: added 1")
    assert cli("subscribers", "count").stdout.strip() == "0"


def test_export_to_stdout_and_file_round_trips(news, cli, project):
    cli("lists", "create", "copy")
    cli("subscribers", "add", "a@example.com", "--name", "Smith, A", "--list", "news",
        "--attr", "city=Oslo")
    cli("subscribers", "add", "b@bücher.de", "--list", "news")
    out = cli("subscribers", "export", "--list", "news")
    assert out.exit_code == 0
    assert out.stdout.splitlines() == ["email,name,status,city", 'a@example.com,"Smith, A",active,Oslo',
                                       "b@bücher.de,,active,"]
    written = cli("subscribers", "export", "--list", "news", "-o", "out.csv")
    assert written.exit_code == 0 and "exported 2 subscribers" in written.stderr
    assert Path("out.csv").read_text(encoding="utf-8") == out.stdout
    jsonl = cli("subscribers", "export", "--format", "jsonl", "-o", "out.jsonl")
    assert [json.loads(l)["email"] for l in Path("out.jsonl").read_text().splitlines()] == [
        "a@example.com", "b@bücher.de"]
    imported = cli("subscribers", "import", "out.csv", "--list", "copy")
    assert imported.exit_code == 0 and "added 0, updated 2" in imported.stdout
    assert cli("subscribers", "export", "--list", "copy").stdout == out.stdout


def _importing(news: Path) -> bool:
    """Whether the import has written a good part of the file (well inside its transaction)."""
    url = os.environ.get("NEWSLETTER_DATABASE_URL")
    if url:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SELECT max(tuples_processed) FROM pg_stat_progress_copy").fetchone()
        return bool(row[0]) and row[0] > 50_000
    db = news / "subscribers" / "subscribers.db-wal"
    return db.exists() and db.stat().st_size >= 200_000


def test_ctrl_c_during_an_import_exits_130_and_writes_nothing(news):
    rows = "".join(f"u{i}@example.com,U\n" for i in range(400_000))
    Path("big.csv").write_text("email,name\n" + rows, encoding="utf-8")
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "subscribers", "import",
                             "big.csv", "--list", "news"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _importing(news):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    with open_store(load_config()) as store:
        assert store.count_subscribers() == 0


def test_progress_bar_on_a_terminal_does_not_disturb_the_output(news, cli, monkeypatch):
    import newsletter.cli.subscribers as module

    monkeypatch.setattr(module, "stderr_is_terminal", lambda: True)
    Path("in.csv").write_text("email\n" + "".join(f"u{i}@example.com\n" for i in range(25_000)),
                              encoding="utf-8")
    result = cli("subscribers", "import", "in.csv", "--list", "news")
    assert result.exit_code == 0 and result.stdout.startswith("added 25000,")
    exported = cli("subscribers", "export", "-o", "out.csv")
    assert exported.exit_code == 0 and "exported 25000" in exported.stderr
