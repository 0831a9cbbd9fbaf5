"""The edition commands through typer's CliRunner: exit codes, files, one-line messages."""

from __future__ import annotations

import json
import shutil
import tomllib

import pytest

from newsletter.config import load_config
from newsletter.edition.source import load_edition
from tests.conftest import REPO, SAMPLES

EXAMPLE = REPO / "editions" / "2026-11-24.md"
COMMANDS = ["init", "new", "add", "check", "build", "preview"]


@pytest.fixture
def example(project):
    (project / "editions").mkdir()
    return shutil.copy(EXAMPLE, project / "editions" / EXAMPLE.name)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(cli, command):
    from newsletter.cli import app
    import typer.main

    click_command = typer.main.get_command(app).commands[command]
    assert click_command.help and len(click_command.help) > 20
    result = cli(command, "--help")
    assert result.exit_code == 0
    for param in click_command.params:
        if param.param_type_name == "option" and "--help" not in param.opts:
            assert param.help, f"{command} {param.opts} has no help"


def test_init_creates_a_project(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("init", "site", "--name", "My Letter", "--postal-address", "2 High St")
    assert result.exit_code == 0, result.output
    root = tmp_path / "site"
    data = tomllib.loads((root / "newsletter.toml").read_text(encoding="utf-8"))
    assert data["name"] == "My Letter" and data["postal_address"] == "2 High St"
    assert (root / "editions").is_dir() and (root / "subscribers").is_dir()
    assert (root / ".newsletter-secret").stat().st_mode & 0o777 == 0o600
    assert ".newsletter-secret" in (root / ".gitignore").read_text()
    config = load_config(root / "newsletter.toml")
    assert config.name == "My Letter"
    again = cli("init", "site")
    assert again.exit_code == 2 and "already a newsletter project" in again.output


def test_new_then_build_in_a_fresh_project(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("init", ".", "--postal-address", "2 High St").exit_code == 0
    result = cli("new", "--date", "2026-01-05")
    assert result.exit_code == 0 and "editions/2026-01-05.md" in result.output
    edition = load_edition(tmp_path / "editions" / "2026-01-05.md", config=load_config())
    assert edition.date.date().isoformat() == "2026-01-05" and len(edition.items) == 1
    again = cli("new", "--date", "2026-01-05")
    assert again.exit_code == 2 and "already exists" in again.output
    bad = cli("new", "--date", "5 Jan")
    assert bad.exit_code == 2 and "expected YYYY-MM-DD" in bad.output
    built = cli("build", "editions/2026-01-05.md")  # skeleton: TODO warnings only
    assert built.exit_code == 0, built.output
    assert "placeholder-text" in built.output
    assert (tmp_path / "build" / "2026-01-05.html").is_file()


def test_add_appends_with_the_next_number(cli, example):
    result = cli("add", example, "https://new.example/story", "--title", "Eleventh [item]",
                 "--summary", "A *short* summary.")
    assert result.exit_code == 0, result.output
    assert "added item 11" in result.output
    edition = load_edition(example, config=load_config())
    assert len(edition.items) == 11
    eleventh = edition.items[10]
    assert (eleventh.number, eleventh.title, eleventh.url) == (11, "Eleventh [item]", "https://new.example/story")
    assert eleventh.summary == "A *short* summary."
    assert edition.essay.heading == "推理时代的三个问题"  # the essay is untouched


def test_add_to_an_edition_without_items(cli, project):
    path = project / "e.md"
    path.write_text("---\ntitle: T\ndate: 2025-01-02T08:00:00+00:00\n---\n\nLede.\n\n---\n\nEssay text.\n")
    assert cli("add", path, "https://a.example/", "--title", "First").exit_code == 0
    assert cli("add", path, "https://b.example/", "--title", "Second", "--summary", "S.").exit_code == 0
    edition = load_edition(path, config=load_config())
    assert [i.title for i in edition.items] == ["First", "Second"]
    assert edition.essay.blocks[0].text == "Essay text."
    lede_only = project / "l.md"
    lede_only.write_text("---\ntitle: T\ndate: 2025-01-02T08:00:00+00:00\n---\n\nLede.\n")
    assert cli("add", lede_only, "https://a.example/", "--title", "Only").exit_code == 0
    assert [i.title for i in load_edition(lede_only, config=load_config()).items] == ["Only"]


def test_new_and_add_report_unwritable_places_in_one_line(cli, project):
    path = project / "e.md"
    path.write_text("---\ntitle: T\ndate: 2025-01-02T08:00:00+00:00\n---\n\nLede.\n")
    (project / ".e.md.tmp").mkdir()  # the atomic write's temporary file cannot be made
    added = cli("add", path, "https://a.example/", "--title", "First")
    assert added.exit_code == 2 and "cannot write" in added.output and "Traceback" not in added.output
    assert "First" not in path.read_text(encoding="utf-8")
    editions = project / "editions"
    if editions.is_dir():
        editions.rmdir()
    editions.write_text("")  # a file where the editions folder should be
    made = cli("new", "--date", "2026-01-05")
    assert made.exit_code == 2 and "expected a folder" in made.output and "Traceback" not in made.output


def test_add_refuses_bad_urls(cli, example):
    result = cli("add", example, "javascript:alert(1)", "--title", "x")
    assert result.exit_code == 2 and "not an http(s) address" in result.output
    assert len(load_edition(example, config=load_config()).items) == 10


def test_check_exit_codes_and_json(cli, example, project):
    ok = cli("check", example)
    assert ok.exit_code == 0 and "0 error(s), 0 warning(s)" in ok.output
    data = json.loads(cli("check", example, "--json").output)
    assert data["errors"] == 0 and data["findings"] == [] and data["slug"] == "2026-11-24"
    bad = project / "bad.md"
    bad.write_text("---\ntitle: T\ndate: 2025-01-02T08:00:00+00:00\n---\n\n[x](javascript:alert(1))\n")
    result = cli("check", bad)
    assert result.exit_code == 1
    assert f"{bad}:6: error: unsafe link" in result.output
    data = json.loads(cli("check", bad, "--json").output)
    assert data["errors"] == 1 and data["findings"][0]["code"] == "unsafe-link" and data["findings"][0]["line"] == 6


def test_build_writes_files_and_refuses_on_errors(cli, example, project):
    result = cli("build", example)
    assert result.exit_code == 0, result.output
    html = project / "build" / "2026-11-24.html"
    assert html.read_text(encoding="utf-8").startswith("<!doctype html>")
    assert "KB" in result.output and "2026-11-24.txt" in result.output
    out = project / "elsewhere"
    assert cli("build", example, "-o", out).exit_code == 0 and (out / "2026-11-24.txt").is_file()
    bad = project / "bad.md"
    bad.write_text("---\ntitle: T\ndate: 2025-01-02T08:00:00+00:00\nslug: bad\n---\n\n![](https://x.example/i.png)\n")
    refused = cli("build", bad)
    assert refused.exit_code == 1 and "build refused" in refused.output
    assert not (project / "build" / "bad.html").exists()
    forced = cli("build", bad, "--force")
    assert forced.exit_code == 0 and (project / "build" / "bad.html").exists()


@pytest.mark.parametrize("text, message", [
    ("just text\n", ":1: no front matter"),
    ("---\ntitle: x\ndate: nope\n---\n", ":3: unparseable date"),
    ("---\ntitle: x\ndate: 2025-01-02T08:00:00+00:00\n---\nL\n\n---\n\n1. plain\n", ":9: item 1 has no link"),
])
@pytest.mark.parametrize("command", ["check", "build"])
def test_bad_input_is_one_line_and_exit_2(cli, project, text, message, command):
    path = project / "bad.md"
    path.write_text(text, encoding="utf-8")
    result = cli(command, path)
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and message in result.output
    assert "Traceback" not in result.output


def test_missing_edition_file(cli, project):
    result = cli("build", project / "nope.md")
    assert result.exit_code == 2 and "no such edition file" in result.output


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/samples is not present")
def test_build_sample_with_pasted_essay(cli, project):
    result = cli("build", SAMPLES / "2025-10-14-ai-digest.md", "--essay", SAMPLES / "2025-10-15-essay.txt")
    assert result.exit_code == 0, result.output
    text = (project / "build" / "2025-10-14.txt").read_text(encoding="utf-8")
    assert "OpenAI与DeepSeek，正在把AI竞争引入软硬协同阶段" in text
    assert "用户登录" not in text and "新浪科技" in text
    assert text.count("https://www.ithome.com/") == 6
