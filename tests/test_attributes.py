"""Attribute names: one spelling (``attr_key``) for CSV columns, --attr, placeholders and the
data stored before migration 008."""

from __future__ import annotations

import json
import sqlite3

from newsletter.audience.attributes import attr_key, normalise_attributes
from newsletter.send.message import substitute
from newsletter.render.rendered import placeholder
from newsletter.store import db, open_store


def test_attr_key_folds_case_and_space():
    assert attr_key("City") == "city"
    assert attr_key("  Home   City ") == "home_city"
    assert attr_key("Straße") == "straße" and attr_key("ÉTAT") == "état"
    assert attr_key("城市") == "城市"


def test_folding_keys_prefers_a_value_then_the_normal_spelling():
    assert normalise_attributes({"City": "London", "city": ""}) == {"city": "London"}
    assert normalise_attributes({"city": "Paris", "City": "London"}) == {"city": "Paris"}
    assert normalise_attributes({"City": "London", "Home Town": "X"}) == {"city": "London", "home_town": "X"}


def test_placeholders_find_the_attribute_whatever_its_spelling():
    values = {"attr.city": "London"}
    for written in ("@@nl:attr.city@@", "@@nl:attr.City@@", placeholder("attr.CITY")):
        assert substitute(f"<p>{written}</p>", values, html=True) == "<p>London</p>"


def test_cli_attr_and_a_csv_column_are_one_attribute(project, cli):
    (project / "r.csv").write_text("email,City\nada@example.com,London\n", encoding="utf-8")
    assert cli("lists", "create", "daily").exit_code == 0
    assert cli("subscribers", "import", "r.csv", "--list", "daily").exit_code == 0
    assert cli("subscribers", "add", "ada@example.com", "--attr", "city=Paris").exit_code == 0
    shown = json.loads(cli("subscribers", "show", "ada@example.com", "--json").stdout)
    assert shown["attributes"] == {"city": "Paris"}


def test_migration_008_normalises_stored_names(tmp_path):
    path = tmp_path / "old.db"
    raw = sqlite3.connect(path)
    for version, _name, sql in db.migrations():
        if version < 8:
            raw.executescript(sql)
            raw.execute(f"PRAGMA user_version = {version}")
    rows = [("a@example.com", {"City": "London", "city": "", "Home Town": "X"}),
            ("b@example.com", {"city": "Oslo", "CITY": "Bergen"}),
            ("c@example.com", {"zip": "1"})]
    for email, attrs in rows:
        raw.execute("INSERT INTO subscribers (email, email_key, attributes, status, created_at) "
                    "VALUES (?, ?, ?, 'active', '2025-01-01T00:00:00Z')", (email, email, json.dumps(attrs)))
    raw.commit()
    raw.close()
    with open_store(str(path)) as s:
        assert db.schema_version(s.conn) == db.latest_version()
        assert s.get_subscriber("a@example.com").attributes == {"city": "London", "home_town": "X"}
        assert s.get_subscriber("b@example.com").attributes == {"city": "Oslo"}
        assert s.get_subscriber("c@example.com").attributes == {"zip": "1"}
