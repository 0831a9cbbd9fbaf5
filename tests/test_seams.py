"""Where the features of issues 9-13 meet: each test drives the real CLI (in-process, no
exception caught, so a traceback fails it) in a project folder of its own."""

from __future__ import annotations

import pytest

from tests.conftest import PROJECT_TOML

DRAFT = """\
---
title: "Tuesday digest"
date: 2026-12-01T08:00:00+00:00
---

A lede sentence here.

---

1.  [First story](https://one.example.com/x)

    Summary of the first.
"""


def _config(project, extra: str) -> None:
    (project / "newsletter.toml").write_text(PROJECT_TOML + extra + "\n", encoding="utf-8")


@pytest.mark.parametrize("template", ["{number:d} {title}", "{number:03d} · {title}", "{title!r}",
                                      "{title:>500}", "{date:%Y}"])
def test_subject_template_with_a_format_spec_is_a_config_error(cli, project, template):
    """A draft has no number yet ({number} is empty until its first send), so a format spec
    that only fits an int was a ValueError traceback in `check`; any spec or conversion is
    refused when the configuration loads, one line naming the key, exit 2."""
    _config(project, f'subject_template = "{template}"')
    (project / "ed.md").write_text(DRAFT, encoding="utf-8")
    result = cli("check", "ed.md")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "subject_template" in lines[0], result.output


def test_subject_template_number_of_a_draft_still_works(cli, project):
    _config(project, 'subject_template = "#{number} {title}"')
    (project / "ed.md").write_text(DRAFT, encoding="utf-8")
    result = cli("build", "ed.md")
    assert result.exit_code == 0, result.output
    assert "<title>#1 Tuesday digest</title>" in (project / "build" / "2026-12-01.html").read_text()


@pytest.mark.parametrize("extra", ["timeout = nan", "timeout = inf", "timeout = -1",
                                   "concurrency = 0", "concurrency = 100000000"])
def test_sources_numbers_out_of_range_are_config_errors(cli, project, extra):
    """`sources.timeout = nan` reached anyio ("deadline must not be NaN") as a traceback."""
    _config(project, f'[sources]\nfeeds = ["http://127.0.0.1:9/feed.xml"]\n{extra}')
    result = cli("gather")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "sources." in lines[0], result.output


def _rss(base: str, published) -> bytes:
    from email.utils import format_datetime

    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>f</title>'
            f"<link>{base}/</link><description>d</description><item><title>Fresh story</title>"
            f"<link>{base}/fresh</link><pubDate>{format_datetime(published)}</pubDate>"
            f"<description>New since the edition went out.</description></item></channel></rss>").encode()


def test_gather_counts_from_the_last_edition_not_a_later_resend_of_it(cli, project, monkeypatch):
    """An edition may be sent more than once (i10: another list later). `gather` lists what is
    newer than the last sent *edition*; it took the newest send of any edition, so sending
    yesterday's edition to a new list hid every story published since yesterday's send."""
    import time
    from datetime import datetime, timezone

    from tests.local_http import LocalSite, Route

    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    (project / "ed.md").write_text(DRAFT, encoding="utf-8")
    for name in ("daily", "late"):
        assert cli("lists", "create", name).exit_code == 0
    assert cli("subscribers", "add", "ann@example.org", "--list", "daily").exit_code == 0
    assert cli("subscribers", "add", "bob@example.org", "--list", "late").exit_code == 0
    assert cli("send", "ed.md", "--list", "daily", "--yes").exit_code == 0
    time.sleep(1.1)
    published = datetime.now(timezone.utc).replace(microsecond=0)
    time.sleep(1.1)
    resend = cli("send", "ed.md", "--list", "late", "--yes")  # the same edition, a second audience
    assert resend.exit_code == 0 and "2026-12-01#2" in resend.output, resend.output
    with LocalSite() as site:
        site.routes["/rss"] = Route(_rss(site.base, published), content_type="application/rss+xml")
        _config(project, f'[sources]\nfeeds = ["{site.url("/rss")}"]')
        result = cli("gather")
    assert result.exit_code == 0, result.output
    assert "Fresh story" in result.output, result.output


def test_check_does_not_call_an_edition_already_covered_by_itself_after_its_slug_changed(cli, project):
    """i10: a `slug:` added to a sent edition (or its date written in another offset) is the
    same edition, and `send` says so. i13's "already covered" excluded the edition's own sends
    by slug only, so the same check then warned that every item "ran on" the edition itself."""
    (project / "editions").mkdir()
    path = project / "editions" / "2026-12-01.md"
    path.write_text(DRAFT, encoding="utf-8")
    assert cli("lists", "create", "daily").exit_code == 0
    assert cli("subscribers", "add", "ann@example.org", "--list", "daily").exit_code == 0
    assert cli("send", str(path), "--list", "daily", "--yes").exit_code == 0
    assert "already-covered" not in cli("check", str(path)).output
    path.write_text(DRAFT.replace("date: 2026-12-01T08:00:00+00:00",
                                  "date: 2026-12-01T09:00:00+01:00\nslug: tuesday"), encoding="utf-8")
    dry = cli("send", str(path), "--list", "daily", "--dry-run")
    assert "this is still edition '2026-12-01'" in dry.output, dry.output
    result = cli("check", str(path))
    assert result.exit_code == 0, result.output
    assert "already-covered" not in result.output, result.output
    # another edition with the same story is still told
    other = project / "editions" / "2026-12-02.md"
    other.write_text(DRAFT.replace("2026-12-01", "2026-12-02"), encoding="utf-8")
    assert "item 1 ran on 2026-12-01 (#1) (same link) [already-covered]" in cli("check", str(other)).output


@pytest.mark.parametrize("value", ["host:x", "not a host:99999", "127.0.0.1:0", "[::1", "1.2.3.4:"])
def test_a_malformed_dns_nameservers_is_a_config_error(cli, project, value):
    """`[dns] nameservers = "host:x"` was a ValueError traceback in `doctor` (int("x")); a
    resolver with a space or port 99999 was tried for the whole lookup lifetime."""
    _config(project, f'transport = "smtp"\n[smtp]\nhost = "127.0.0.1"\nport = 1\n[dns]\nnameservers = "{value}"')
    result = cli("doctor")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "dns.nameservers" in lines[0], result.output


def test_a_malformed_dns_nameservers_env_is_one_line(cli, project, monkeypatch):
    _config(project, 'transport = "smtp"\n[smtp]\nhost = "127.0.0.1"\nport = 1')
    monkeypatch.setenv("NEWSLETTER_DNS_NAMESERVERS", "host:x")
    result = cli("doctor")
    assert result.exit_code == 2, result.output
    assert "NEWSLETTER_DNS_NAMESERVERS: 'host:x' is not a resolver" in result.output
    assert "Traceback" not in result.output


def test_good_dns_nameservers_parse():
    from newsletter.dnscheck import parse_nameservers

    assert parse_nameservers("192.0.2.53, 127.0.0.1:5353, [2001:db8::1]:5353, ::1, ns.example") == [
        ("192.0.2.53", 53), ("127.0.0.1", 5353), ("2001:db8::1", 5353), ("::1", 53), ("ns.example", 53)]
    assert parse_nameservers("off") == [] and parse_nameservers("") == []


def test_where_names_an_attribute_the_way_imports_and_templates_do(cli, project):
    """i13 stores attribute keys normalised (a `City` column is `city`; `@@nl:attr.City@@` finds
    it); i10's `--where City=Berlin` compared the key as typed, so it matched nobody, and
    `--where 'City!=Berlin'` matched everybody: a send to the Berliners it meant to leave out."""
    (project / "r.csv").write_text("email,name,Home City\nann@example.org,Ann,Berlin\n"
                                   "bob@example.org,Bob,Paris\n", encoding="utf-8")
    assert cli("lists", "create", "daily").exit_code == 0
    assert cli("subscribers", "import", "r.csv", "--list", "daily").exit_code == 0
    for where, expected in (("home_city=Berlin", "1"), ("Home City=Berlin", "1"), ("HOME_CITY=berlin", "1"),
                            ("Home City!=Berlin", "1"), ("has:Home City", "2")):
        result = cli("subscribers", "count", "--list", "daily", "--where", where)
        assert result.exit_code == 0 and result.output.strip() == expected, (where, result.output)
    (project / "ed.md").write_text(DRAFT, encoding="utf-8")
    assert cli("send", "ed.md", "--list", "daily", "--where", "Home City!=Berlin", "--yes").exit_code == 0
    sent = [p.read_text() for p in (project / "outbox" / "2026-12-01" / "new").iterdir()]
    assert len(sent) == 1 and "bob@example.org" in sent[0]


def test_a_fractional_send_rate_is_accepted(cli, project):
    """`[send] rate` is messages/s (a float; README: 0-100000): `rate = 0.5` was refused with
    "send.rate must be int, not float" because the field's default was the int 0."""
    from newsletter.config import load_config

    _config(project, "[send]\nrate = 0.5")
    assert load_config().send.rate == 0.5
    _config(project, "[send]\nrate = 3")
    assert load_config().send.rate == 3.0
    _config(project, "[send]\nrate = nan")
    result = cli("subscribers", "count")
    assert result.exit_code == 2 and "send.rate" in result.output
