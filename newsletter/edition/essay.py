"""An essay from its own file (``--essay FILE``): Markdown, or a plain-text article pasted from a
web page.

A pasted article looks like: a title line, a dateline (date, author or outlet, a view counter),
paragraphs, a source attribution such as ``（来源：新浪科技）`` and then page debris ("用户登录",
"Share", …). The title becomes the essay heading, the paragraphs stay paragraphs, the dateline
is dropped, the attribution is kept, and everything after it is dropped.
"""

from __future__ import annotations

import re

from newsletter.edition.model import Block, BlockKind, Essay
from newsletter.edition.markdown import escape

_DATELINE_RE = re.compile(
    r"(\d{4}\s*年\s*\d{1,2}\s*月\s*\d{1,2}\s*日|\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}:\d{2}|"
    r"阅读|浏览|views?\b|作者|来源[:：]|发布|编辑[:：]|\bBy\s+[A-Z]|"
    r"\b(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.?\s+\d{1,2},?\s+\d{4})",
    re.IGNORECASE,
)
_ATTRIBUTION_RE = re.compile(
    r"^[（(\[【]?\s*(来源|来源于|资料来源|本文来源|文章来源|原文|转自|出处|编译自|via|source|originally published)"
    r"\s*[:：]?.{0,80}?[）)\]】]?\s*$",
    re.IGNORECASE,
)
_SENTENCE_END = tuple("。！？.!?」”\"')）…")
DATELINE_MAX = 120  # a dateline is a short line; a long one is the first paragraph
DEBRIS_MAX = 16  # trailing lines this short without sentence punctuation are page furniture


def markdown_essay(text: str) -> Essay:
    """An essay written in Markdown: an optional first heading, then blocks."""
    from newsletter.edition.parse import essay_from_markdown

    return essay_from_markdown(text) or Essay()


def pasted_essay(text: str) -> Essay:
    """An article pasted from a web page, as described in the module docstring."""
    lines = [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), start=1) if ln.strip()]
    if not lines:
        return Essay()
    (_, title), body = lines[0], lines[1:]
    body = _drop_dateline(body)
    body = _cut_after_attribution(body)
    fixed = 0
    title, count = full_width_punctuation(_tidy(title))
    fixed += count
    paragraphs = []
    for n, t in body:
        t, count = full_width_punctuation(_tidy(t))
        fixed += count
        paragraphs.append(Block(BlockKind.PARAGRAPH, escape(t), line=n))
    return Essay(heading=title, blocks=tuple(paragraphs), heading_line=lines[0][0], punctuation_fixed=fixed)


_FULL_WIDTH = {",": "，", ";": "；", ":": "：", "?": "？", "!": "！", "(": "（", ")": "）"}
_URL_RE = re.compile(r"(?:https?://|www\.)[^\s\u3000-\u303f\uff00-\uffef]+|[\w.+-]+@[\w-]+\.[\w.-]+", re.I)
_PUNCT_RE = re.compile(r"[,;:?!]")
_PAREN_RE = re.compile(r"\(([^()]{0,80})\)")


def full_width_punctuation(text: str) -> tuple[str, int]:
    """A pasted Chinese article's half-width ``, ; : ? ! ( )`` next to Chinese text turned into
    their full-width forms (the digest's own punctuation), with how many were changed.

    A mark is changed when the character before it is CJK, or the one right after it is and the
    one before is a letter or digit ("DeepSeek,正在"); a pair of parentheses when what is
    around or inside them is CJK. Untouched: URLs and addresses, numbers ("1,000", "10:30"),
    and Latin text ("Hello, world"). The space that often follows a half-width mark goes too.
    """
    from newsletter.edition.markdown import is_cjk

    if not any(is_cjk(c) for c in text):
        return text, 0
    protected = [(m.start(), m.end()) for m in _URL_RE.finditer(text)]

    def inside(pos: int) -> bool:
        return any(a <= pos < b for a, b in protected)

    count = 0
    out = list(text)
    drop_space: set[int] = set()
    for m in _PUNCT_RE.finditer(text):
        i = m.start()
        if inside(i):
            continue
        before = text[i - 1] if i else ""
        j = i + 1
        while j < len(text) and text[j] == " ":
            j += 1
        after = text[j] if j < len(text) else ""
        if before.isdigit() and after.isdigit():
            continue
        if (before and is_cjk(before)) or (j == i + 1 and after and is_cjk(after) and before.isalnum()):
            out[i] = _FULL_WIDTH[m.group(0)]
            drop_space.update(range(i + 1, j))
            count += 1
    for m in _PAREN_RE.finditer(text):
        i, k = m.start(), m.end() - 1
        if inside(i) or inside(k):
            continue
        around = (i and is_cjk(text[i - 1])) or (k + 1 < len(text) and is_cjk(text[k + 1]))
        if around or any(is_cjk(c) for c in m.group(1)):
            out[i], out[k] = "（", "）"
            drop_space.update(x for x in (i - 1, k + 1) if 0 <= x < len(text) and text[x] == " ")
            count += 2
    return "".join(c for n, c in enumerate(out) if n not in drop_space), count


def _drop_dateline(body: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Drop the byline lines right under the title (date, author, outlet, view counter)."""
    kept = list(body)
    while kept and len(kept[0][1]) <= DATELINE_MAX and _DATELINE_RE.search(kept[0][1]) \
            and not kept[0][1].endswith(("。", ".")):
        kept.pop(0)
    return kept


def _cut_after_attribution(body: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Keep up to the source attribution; without one, drop short trailing furniture lines."""
    for i in range(len(body) - 1, -1, -1):
        if _ATTRIBUTION_RE.match(body[i][1]):
            return body[: i + 1]
    kept = list(body)
    while kept and len(kept[-1][1]) <= DEBRIS_MAX and not kept[-1][1].endswith(_SENTENCE_END):
        kept.pop()
    return kept


def _tidy(line: str) -> str:
    """Collapse runs of whitespace (pasted text is full of them)."""
    return " ".join(line.split())
