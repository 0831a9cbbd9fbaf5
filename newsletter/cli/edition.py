"""Commands for making an edition: init, new, add, check, build, preview.

Each command opens what it needs and calls one library function; heavy modules (markdown-it,
mjml, premailer, watchfiles) are imported inside the commands, never at the top.
"""

from __future__ import annotations

import json
from datetime import date as date_type
from pathlib import Path
from typing import Annotated, Optional

import typer

from newsletter.cli.common import get_config, notice

EssayOption = Annotated[
    Optional[Path],
    typer.Option("--essay", metavar="FILE", dir_okay=False,
                 help="Take the essay from this file (Markdown, or a plain-text article pasted from a web page)."),
]
EditionArgument = Annotated[Path, typer.Argument(metavar="EDITION", help="The edition file, e.g. editions/2025-10-14.md.")]


def register(app: typer.Typer) -> None:
    for command in (init, new, add, check, build, preview):
        app.command(name=command.__name__.replace("_", "-"))(command)


def init(
    folder: Annotated[Path, typer.Argument(metavar="[DIR]", help="Folder for the project (default: here).",
                                           file_okay=False)] = Path("."),
    name: Annotated[str, typer.Option("--name", help="The newsletter's name (footer, List-Id).")] = "Newsletter",
    lang: Annotated[str, typer.Option("--lang", help="Default language of editions, e.g. en or zh-CN.")] = "en",
    postal_address: Annotated[str, typer.Option("--postal-address",
                                                help="Postal address for the footer (required before sending).")] = "",
) -> None:
    """Create a newsletter project: newsletter.toml, editions/, subscribers/, templates/, a secret
    and .gitignore entries."""
    from newsletter.project import init_project

    result = init_project(folder, name=name, lang=lang, postal_address=postal_address)
    for path in result.created:
        typer.echo(f"created {_shown(path)}")
    notice(f"next: cd {_shown(result.root)} && newsletter new")


def _parse_day(value: Optional[str]) -> Optional[date_type]:
    if value is None:
        return None
    try:
        return date_type.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date: expected YYYY-MM-DD") from None


def new(
    ctx: typer.Context,
    day: Annotated[Optional[str], typer.Option("--date", metavar="YYYY-MM-DD",
                                               help="The edition's date (default: today).")] = None,
) -> None:
    """Create editions/<date>.md from the skeleton (never overwrites)."""
    from newsletter.project import new_edition

    path = new_edition(get_config(ctx), _parse_day(day))
    typer.echo(f"created {_shown(path)}")


def add(
    ctx: typer.Context,
    edition: EditionArgument,
    url: Annotated[str, typer.Argument(help="The item's link (http or https).")],
    title: Annotated[Optional[str], typer.Option("--title", "-t", help="The item's headline (default: the page's).")] = None,
    summary: Annotated[Optional[str], typer.Option("--summary", "-s", help="The item's summary (Markdown; default: the page's description).")] = None,
    no_fetch: Annotated[bool, typer.Option("--no-fetch", help="Do not fetch the page (needs --title).")] = False,
) -> None:
    """Append an item (linked title and summary) to an edition, numbered after the last one.

    Without --title or --summary the page is fetched for its title (og:title, twitter:title,
    <title>), description and canonical URL; tracking parameters are removed from the link."""
    from newsletter.sources.fetch import link_item, user_agent
    from newsletter.project import add_item
    from newsletter import text

    for field, value in (("the URL", url), ("--title", title), ("--summary", summary)):
        if value is not None:  # bytes that are not UTF-8 from the terminal, a NUL
            text.require(field, value)
    config = get_config(ctx)
    found = link_item(url, title=title, summary=summary, fetch=not no_fetch,
                      agent=user_agent(config.name, config.base_url))
    if found.error:
        notice(f"warning: not fetched: {found.error}; adding the item as given")
    elif found.page is not None:
        page = found.page
        notice(f"fetched {page.fetched_url}" + (" (first 2 MB only)" if page.truncated else ""))
        notice(f"  title:   {page.title or '-'}" + ("  (yours used)" if title else ""))
        notice(f"  summary: {page.summary or '-'}" + ("  (yours used)" if summary is not None else ""))
        if page.url != url.strip():
            notice(f"  link:    {page.url}")
    item = add_item(edition, found.url, found.title, found.summary, config=config)
    typer.echo(f"added item {item.number} to {_shown(edition)}: {item.title} ({item.domain})")


def check(
    ctx: typer.Context,
    edition: EditionArgument,
    essay: EssayOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> None:
    """Run the pre-send checks; exit 1 when there are errors."""
    from newsletter.render.build import build_edition
    from newsletter.edition.checks import Level, has_errors

    config = get_config(ctx)
    parsed, rendered, findings = build_edition(edition, config, essay)
    errors = sum(f.level is Level.ERROR for f in findings)
    warnings = sum(f.level is Level.WARNING for f in findings)
    if as_json:
        typer.echo(json.dumps({"edition": str(edition), "slug": parsed.slug, "errors": errors,
                               "warnings": warnings,
                               "html_bytes": len(rendered.html.encode("utf-8")),
                               "findings": [f.as_dict() for f in findings]}, ensure_ascii=False, indent=2))
    else:
        for finding in findings:
            typer.echo(finding.format(edition))
        typer.echo(f"{_shown(edition)}: {errors} error(s), {warnings} warning(s)")
    if has_errors(findings):
        raise typer.Exit(1)


def build(
    ctx: typer.Context,
    edition: EditionArgument,
    essay: EssayOption = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="DIR", file_okay=False,
                                                   help="Where to write <slug>.html and <slug>.txt (default: build/).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Write the files even when the checks find errors.")] = False,
) -> None:
    """Build the edition into <slug>.html and <slug>.txt after running the checks."""
    from newsletter.render.build import build_edition, write_build
    from newsletter.edition.checks import has_errors

    config = get_config(ctx)
    _, rendered, findings = build_edition(edition, config, essay)
    for finding in findings:
        notice(finding.format(edition))
    if has_errors(findings) and not force:
        notice("build refused: fix the errors above, or use --force")
        raise typer.Exit(1)
    for path in write_build(rendered, output or config.build_path, config):
        typer.echo(f"{_shown(path)}  {path.stat().st_size / 1024:.1f} KB")


def preview(
    ctx: typer.Context,
    edition: EditionArgument,
    essay: EssayOption = None,
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port on 127.0.0.1.")] = 8025,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the preview in a web browser.")] = False,
) -> None:
    """Serve a live-reloading preview on 127.0.0.1: desktop and phone widths, text part, checks."""
    from newsletter.render.preview import serve_preview

    def ready(url: str) -> None:
        notice(f"previewing {_shown(edition)} at {url} (Ctrl-C to stop)")
        if open_browser:
            import webbrowser

            webbrowser.open(url)

    serve_preview(edition, get_config(ctx), essay_path=essay, port=port, on_ready=ready)


def _shown(path: Path) -> str:
    """``path`` relative to the current folder when it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(path)

