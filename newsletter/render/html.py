"""Rendering an edition, once: Jinja2 → MJML → mjml-python → premailer → HTML, plus the text part.

The templates live in the project's ``templates/`` folder ahead of the built-in ones (a Jinja
``ChoiceLoader``), so an editor overrides one file by giving it the same name. Everything the
templates show is computed here (the view); they only place it. Output is deterministic: the same
edition and configuration give the same bytes. mjml and premailer are imported lazily.
"""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from newsletter.edition.model import Block, BlockKind, Edition, paragraphs
from newsletter.errors import RenderError
from newsletter.edition.markdown import SAFE_SCHEMES, Link, inline_html
from newsletter.render.rendered import RenderedEmail, placeholder
from newsletter.render.view import date_label, essay_label, labels, language, web_url

if TYPE_CHECKING:
    from markupsafe import Markup

    from newsletter.config import Config

BUILTIN_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
BASE_TEMPLATE = "email/base.mjml.j2"
# Invisible characters after the preheader keep the body's first words out of the inbox preview.
PREHEADER_PADDING = "&#847;&zwnj;&nbsp;" * 60
FONT_STACK = ('-apple-system, \'Segoe UI\', Roboto, \'PingFang SC\', \'Hiragino Sans GB\', '
              '\'Microsoft YaHei\', \'Noto Sans CJK SC\', sans-serif')
def render_edition(edition: Edition, config: Config) -> RenderedEmail:
    """Render ``edition`` into the HTML and text parts every reader gets (placeholders aside).

    Raises ``RenderError`` naming the template when a template or its MJML is broken.
    """
    from newsletter.edition.markdown import shared_inline_parse
    from newsletter.render.text import render_text

    with shared_inline_parse():
        mjml_source = render_mjml(edition, config)
        text = render_text(edition, config)
    html = inline_css(mjml_to_html(mjml_source, config))
    return RenderedEmail(
        slug=edition.slug, subject=edition.subject, preheader=edition.preheader, lang=edition.lang,
        html=html, text=text, web_url=web_url(edition, config),
    )


def render_mjml(edition: Edition, config: Config) -> str:
    """The MJML document for ``edition`` (the Jinja stage)."""
    import jinja2

    env = environment(str(config.templates_path))
    try:
        return env.get_template(BASE_TEMPLATE).render(view(edition, config))
    except jinja2.TemplateSyntaxError as err:
        raise RenderError(f"template error: {err.message}", file=err.filename or err.name, line=err.lineno) from None
    except jinja2.TemplateNotFound as err:
        raise RenderError(f"template not found: {err.name}") from None
    except jinja2.UndefinedError as err:
        raise RenderError(f"template error: {err.message}", file=_template_file(env, BASE_TEMPLATE)) from None


def mjml_to_html(source: str, config: Config) -> str:
    """Compile MJML with mjml-python; broken MJML becomes a ``RenderError`` naming the template.
    MJML nested deeper than mjml-python can recurse is refused first (it would crash the process)."""
    import mjml

    from newsletter.edition.markdown import MAX_NESTING, nesting_depth

    limit = MAX_NESTING + 40  # the templates' own structure on top of the content's
    if nesting_depth(source, limit) > limit:
        env = environment(str(config.templates_path))
        raise RenderError(f"the MJML nests elements more than {limit} levels deep (mjml cannot render "
                          "that); simplify the formatting", file=_template_file(env, BASE_TEMPLATE))
    try:
        # fonts={}: mjml's default font list would add a Google Fonts <link> and @import for
        # Roboto (a third-party fetch on every open); our stack is system fonts only.
        html = mjml.mjml2html(source, disable_comments=True, fonts={})
    except ValueError as err:
        env = environment(str(config.templates_path))
        raise RenderError(f"invalid MJML after rendering the templates: {err}",
                          file=_template_file(env, BASE_TEMPLATE)) from None
    return _quiet_preheader(html)


_PREVIEW_STYLE_RE = re.compile(r'(<div style="display:none;[^"]*?)color:#ffffff;')


def _quiet_preheader(html: str) -> str:
    """mjml hides the preheader with display/opacity/max-height *and* paints it white: the colour
    trick is what SpamAssassin's HTML_FONT_LOW_CONTRAST scores (white on the grey background), and
    it adds nothing, so it goes."""
    return _PREVIEW_STYLE_RE.sub(r"\1mso-hide:all;", html, count=1)


def inline_css(html: str) -> str:
    """Inline the CSS with premailer, keeping ``!important`` and the ``<style>`` blocks (media
    queries, dark mode), then put back the doctype premailer drops.

    Only the block starting with ``/* nl:inline`` (templates/email/styles.css.j2) is inlined:
    MJML's own resets and responsive rules, and ours, are meant for ``<head>`` and are marked
    ``data-premailer="ignore"``, which also spares premailer matching them against every table.
    """
    inliner = _premailer_class()(
        _mark_head_only_styles(html), strip_important=False, keep_style_tags=True, allow_network=False,
        disable_validation=True, cssutils_logging_level=logging.CRITICAL, remove_classes=False,
    )
    out = inliner.transform(pretty_print=False)
    return "<!doctype html>\n" + re.sub(r"^\s*<!doctype[^>]*>\s*", "", out, flags=re.I)


_STYLE_RE = re.compile(r"<style\b([^>]*)>(.*?)</style>", re.S | re.I)
INLINE_MARK = "/* nl:inline"


def _mark_head_only_styles(html: str) -> str:
    def mark(match: re.Match[str]) -> str:
        attrs, body = match.groups()
        if "data-premailer" in attrs or body.lstrip().startswith(INLINE_MARK):
            return match.group(0)
        return f'<style{attrs} data-premailer="ignore">{body}</style>'

    return _STYLE_RE.sub(mark, html)


@functools.lru_cache(maxsize=1)
def _premailer_class():
    """premailer's ``Premailer``, imported with two start-up costs avoided (CLI start-up is
    measured): premailer imports ``requests`` only to fetch external stylesheets, which we never
    allow, and importing requests builds an SSL context (~0.1 s); and cssutils validates every
    inline style against its CSS profiles, compiling large regexes first (~0.1 s) for nothing,
    since the output is the same either way (tests/golden holds us to that)."""
    import sys
    import types

    import cssutils

    cssutils.profile.removeProfile(all=True)
    stubbed = "requests" not in sys.modules
    if stubbed:
        sys.modules["requests"] = types.ModuleType("requests")
    try:
        from premailer import Premailer
    finally:
        if stubbed:
            del sys.modules["requests"]

    class CachingPremailer(Premailer):
        """premailer caches the parsed stylesheet but turns it back into rules on every call,
        through cssutils' slow serializer: most of its time for an email this size. The rules
        are a pure function of the CSS text and our fixed options, so they are kept per text."""

        _rules_cache: dict = {}

        def _parse_style_rules(self, css_body, ruleset_index):
            key = (css_body, ruleset_index)
            cached = self._rules_cache.get(key)  # one lookup: safe with threads (preview, send)
            if cached is None:
                cached = super()._parse_style_rules(css_body, ruleset_index)
                if len(self._rules_cache) > 64:  # an editor changing templates in `preview`
                    self._rules_cache.clear()
                self._rules_cache[key] = cached
            rules, leftover = cached
            return list(rules), list(leftover)

    return CachingPremailer


@functools.lru_cache(maxsize=8)
def environment(project_templates: str):
    """The Jinja environment: the project's templates folder ahead of the built-in one."""
    import jinja2

    folders = [Path(project_templates)]
    if BUILTIN_TEMPLATES.resolve() != Path(project_templates).resolve():
        folders.append(BUILTIN_TEMPLATES)
    loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(f)) for f in folders])
    env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, auto_reload=True)
    env.globals["placeholder"] = placeholder
    env.filters["placeholder"] = placeholder
    return env


def _template_file(env, name: str) -> str:
    for loader in env.loader.loaders:
        for folder in loader.searchpath:
            if (Path(folder) / name).is_file():
                return str(Path(folder) / name)
    return name


def view(edition: Edition, config: Config) -> dict[str, Any]:
    """Everything the templates show, computed and escaped/sanitised here."""
    from markupsafe import Markup, escape

    from newsletter.errors import EditionError
    from newsletter.edition.markdown import MAX_NESTING, NestingTooDeep

    def guarded(make, line: int | None, file=None):
        try:
            return make()
        except NestingTooDeep as err:
            raise EditionError(f"formatting nested {err.depth} levels deep (emphasis or HTML; at most "
                               f"{MAX_NESTING}): simplify it", file=file or edition.source, line=line) from None

    lab = labels(edition.lang)
    zh = language(edition.lang) == "zh"
    essay_file = edition.essay.source if edition.essay is not None else None
    why = Markup(escape(lab["why"])).format(name=config.name, email=Markup(placeholder("email")))
    return {
        "newsletter": {"name": config.name, "postal_address": config.postal_address, "base_url": config.base_url},
        # A namespace, not a dict: `edition.items` must not find dict.items.
        "edition": SimpleNamespace(
            lang=edition.lang, dir="auto", subject=edition.subject, title=edition.title,
            title_html=keep_last_together(edition.title),
            categories_lang=categories_lang(edition),
            preheader=edition.preheader, categories=edition.categories,
            date_label=date_label(edition),
            number_label=lab["number"].format(n=edition.number) if edition.number else "",
            lede=[guarded(lambda b=b: block_html(b), b.line) for b in edition.lede_blocks],
            items=[guarded(lambda i=i: _item_view(i), i.line) for i in edition.items],
            essay=None if edition.essay is None else {
                "heading": edition.essay.heading, "label": essay_label(edition, config),
                "blocks": [guarded(lambda b=b: block_html(b), b.line, essay_file) for b in edition.essay.blocks]},
        ),
        "typography": {"font_stack": FONT_STACK, "font_size": "17px" if zh else "16px",
                       "line_height": "1.7" if zh else "1.5"},
        "labels": lab,
        "footer": {"why": why, "unsubscribe_url": placeholder("unsubscribe_url"),
                   "preferences_url": placeholder("preferences_url"), "web_url": web_url(edition, config)},
        "preheader_padding": Markup(PREHEADER_PADDING),
    }


def _item_view(item) -> dict[str, Any]:
    from markupsafe import Markup

    href = item.url if Link(item.url, item.title).scheme in SAFE_SCHEMES else ""
    summary = [Markup(inline_html(p)) for p in paragraphs(item.summary)]
    return {"number": item.number, "title": item.title, "href": href, "domain": item.domain, "summary": summary}


WORD_JOINER = "\u2060"


def keep_last_together(title: str) -> str:
    """The title with its last two characters kept on one line, so that a narrow screen never
    leaves one character alone on the h1's last line: a word joiner (U+2060) between two CJK
    characters, a no-break space before a short last Latin word. No inline tag: a tag between CJK
    characters is what SpamAssassin's HTML_OBFUSCATE rules count."""
    from newsletter.edition.markdown import is_cjk

    text = title.rstrip()
    if len(text) >= 4 and is_cjk(text[-1]) and is_cjk(text[-2]) and not text[-2].isspace():
        return text[:-1] + WORD_JOINER + text[-1]
    head, space, last = text.rpartition(" ")
    if space and head and len(last) <= 10 and not any(is_cjk(c) for c in last):
        return head + "\u00a0" + last
    return text


def categories_lang(edition: Edition) -> str:
    """``en`` when a Chinese (or other non-Latin) edition's category line is written in Latin
    letters, so that screen readers and hyphenation use English for it; else no attribute."""
    from newsletter.edition.markdown import cjk_ratio

    line = " ".join(edition.categories)
    if not line or language(edition.lang) != "zh":
        return ""
    return "en" if cjk_ratio(line) == 0 and any(c.isalpha() for c in line) else ""


def block_html(block: Block) -> Markup:
    """One lede/essay block as sanitised HTML."""
    from markupsafe import Markup, escape

    if block.kind is BlockKind.PARAGRAPH:
        return Markup(f"<p>{inline_html(block.text)}</p>")
    if block.kind is BlockKind.HEADING:
        return Markup(f"<h3>{inline_html(block.text)}</h3>")
    if block.kind is BlockKind.QUOTE:
        inner = "".join(f"<p>{inline_html(p)}</p>" for p in paragraphs(block.text))
        return Markup(f"<blockquote>{inner}</blockquote>")
    if block.kind in (BlockKind.LIST, BlockKind.ORDERED_LIST):
        tag = "ul" if block.kind is BlockKind.LIST else "ol"
        entries = "".join(f"<li>{inline_html(e)}</li>" for e in block.entries)
        return Markup(f"<{tag}>{entries}</{tag}>")
    return Markup(f"<pre>{escape(block.text)}</pre>")
