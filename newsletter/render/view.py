"""What the HTML and the text part of an edition share: labels by language, the masthead date,
the "view in browser" URL, the essay's default label. Pure functions of the edition and config."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from newsletter.config import Config
    from newsletter.edition.model import Edition

WEEKDAYS = {
    "zh": ("星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日"),
    "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
}
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
LABELS = {
    "zh": {
        "number": "第 {n} 期",
        "why": "你收到这封邮件，是因为你用 {email} 订阅了《{name}》。",
        "unsubscribe": "退订",
        "preferences": "订阅设置",
        "view_in_browser": "在浏览器中查看",
        "essay": "编者按",
        "editors_note": "编者按",
    },
    "en": {
        "number": "No. {n}",
        "why": "You are receiving this because you subscribed to {name} at {email}.",
        "unsubscribe": "Unsubscribe",
        "preferences": "Preferences",
        "view_in_browser": "View in browser",
        "essay": "Essay",
        "editors_note": "Editor's note",
    },
}


def language(lang: str) -> str:
    """The label set for an edition language (``zh`` for any Chinese, else ``en``)."""
    return "zh" if lang.lower().startswith("zh") else "en"


def labels(lang: str) -> dict[str, str]:
    return LABELS[language(lang)]


def date_label(edition: Edition) -> str:
    """The masthead date in the edition's language, e.g. ``2025年10月14日 星期二``."""
    d = edition.date
    if language(edition.lang) == "zh":
        return f"{d.year}年{d.month}月{d.day}日 {WEEKDAYS['zh'][d.weekday()]}"
    return f"{WEEKDAYS['en'][d.weekday()]}, {d.day} {MONTHS[d.month - 1]} {d.year}"


def web_url(edition: Edition, config: Config) -> str:
    """The public "view in browser" page of an edition."""
    return f"{config.base_url.rstrip('/')}/archive/{edition.slug}"


def essay_label(edition: Edition, config: Config) -> str:
    """What stands over an essay that has no heading: ``essay_label`` from the configuration, else
    "编者按" / "Editor's note" by the edition's language."""
    return config.essay_label or labels(edition.lang)["editors_note"]
