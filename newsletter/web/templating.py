"""Jinja for the readers' pages, the feed and transactional mail (no web framework here, so the
static archive build can use it too).

A file in the project's ``templates/`` folder overrides the built-in one of the same name
(``templates/web/base.html`` restyles every page). HTML and XML are autoescaped; ``.txt``
templates (plain-text mail) are not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape

from newsletter.config import Config
from newsletter.web.i18n import translator

BUILTIN_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def template_env(config: Config) -> Environment:
    """The template environment: the project's templates first, then the built-in ones."""
    loader = ChoiceLoader([FileSystemLoader(str(config.templates_path)), FileSystemLoader(str(BUILTIN_TEMPLATES))])
    return Environment(
        loader=loader,
        autoescape=select_autoescape(enabled_extensions=("html", "xml"), default_for_string=True),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def base_url(config: Config) -> str:
    """The public URL prefix without a trailing slash."""
    return config.base_url.rstrip("/")


def base_path(config: Config) -> str:
    """The path part of ``base_url`` ("" at the root of a host, "/news" under a prefix)."""
    return urlsplit(config.base_url).path.rstrip("/")


def page_values(config: Config, lang: str, **values: Any) -> dict[str, Any]:
    """What every page template receives, plus ``values``."""
    return {
        "lang": lang,
        "t": translator(lang),
        "newsletter": config.name,
        "postal_address": config.postal_address,
        "base_path": base_path(config),
        "base_url": base_url(config),
        **values,
    }
