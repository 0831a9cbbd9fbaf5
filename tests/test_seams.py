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
