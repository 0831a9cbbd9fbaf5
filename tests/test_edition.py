"""The edition format: parsing the example, the samples, and every kind of bad input."""

from __future__ import annotations

import textwrap
from datetime import timedelta

import pytest

from newsletter.config import load_config
from newsletter.edition.model import BlockKind
from newsletter.edition.parse import domain_of, first_sentence
from newsletter.edition.source import load_edition
from newsletter.errors import EditionError
from tests.conftest import REPO, SAMPLES

EXAMPLE = REPO / "editions" / "2026-11-24.md"
DIGEST = SAMPLES / "2025-10-14-ai-digest.md"
ESSAY_TXT = SAMPLES / "2025-10-15-essay.txt"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/samples is not present")


@pytest.fixture
def config(project):
    return load_config()


def write(folder, text: str, name: str = "2025-01-02.md"):
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


HEAD = """\
---
title: "A day"
date: 2025-01-02T08:00:00+01:00
---
"""


def test_example_edition_parses(config):
    edition = load_edition(EXAMPLE, config=config)
    assert edition.title == "2026.11.24 AI 每日速递"
    assert edition.slug == "2026-11-24"
    assert edition.date.utcoffset() == timedelta(hours=8)
    assert edition.lang == "zh-CN"  # detected: the project's default is en
    assert edition.categories == ("AI 基础设施", "开源模型", "应用")
    assert [i.number for i in edition.items] == list(range(1, 11))
    assert edition.items[3].domain == "例子.测试"  # IDN shown in Unicode
    assert edition.items[9].title == "教育机构试用 AI 助教，作业批改时间缩短一半"
    assert edition.essay.heading == "推理时代的三个问题"
    kinds = [b.kind for b in edition.essay.blocks]
    assert BlockKind.LIST in kinds and BlockKind.QUOTE in kinds
    assert edition.preheader.startswith("推理成本再降一半")


def test_cjk_line_breaks_are_not_spaces(config):
    edition = load_edition(EXAMPLE, config=config)
    assert "每瓦\n" not in edition.lede and "每瓦性能" in edition.lede
    assert "数据中心的电力上限" in edition.items[0].summary
    assert "，" in edition.items[0].summary  # full-width punctuation untouched


@needs_samples
def test_sample_digest_has_ten_items_and_five_essay_paragraphs(config):
    edition = load_edition(DIGEST, config=config)
    assert edition.title == "2025.10.14 全球AI新闻速递"
    assert edition.subject == edition.title
    assert edition.categories == ("AI Infrastructure", "Generative AI", "Hardware")
    assert len(edition.items) == 10
    first, ninth, last = edition.items[0], edition.items[8], edition.items[9]
    assert first.title == "OpenAI携手博通自研AI芯片，部署10吉瓦级算力"
    assert first.url == "https://www.ithome.com/0/889/159.htm"
    assert first.domain == "ithome.com"
    assert first.summary.startswith("OpenAI与博通宣布达成战略合作，将共同开发和部署一个规模高达**10吉瓦**")
    assert first.summary.endswith("以支撑其未来更大规模模型的研发。")
    assert ninth.url == "https://36kr.com/p/3506932610587778?f=rss"
    assert ninth.title == "工业AI设计公司「设序科技」获数千万元Pre B轮融资"
    assert last.number == 10 and last.title == "“神农AI大模型3.0”发布，聚焦农业垂直领域应用"
    assert last.url == "https://www.ithome.com/0/889/216.htm"
    assert edition.items[5].domain == "analyticsindiamag.com"
    assert edition.essay.heading == ""
    assert len(edition.essay.blocks) == 5
    assert all(b.kind is BlockKind.PARAGRAPH for b in edition.essay.blocks)
    assert edition.essay.blocks[0].text.startswith("今天的几条新闻串起来看")
    assert edition.lang == "zh-CN"
    assert edition.preheader == "今日全球AI领域风起云涌，焦点集中于硬件层面的战略博弈与上层应用的持续爆发。"


@needs_samples
def test_pasted_essay_through_essay_option(config):
    edition = load_edition(DIGEST, config=config, essay_path=ESSAY_TXT)
    essay = edition.essay
    assert essay.heading == "OpenAI与DeepSeek，正在把AI竞争引入软硬协同阶段"
    texts = [b.text for b in essay.blocks]
    assert texts[0].startswith("全球AI竞争正在走向模型与算力的协同")
    assert not any("阅读" in t and "views" in t for t in texts)  # dateline dropped
    assert "新浪科技" in texts[-1]  # attribution kept, last
    assert not any("用户登录" in t for t in texts)  # page debris dropped
    assert len(texts) == 22
    assert essay.source == ESSAY_TXT
    assert len(edition.items) == 10  # the items stay


def test_essay_only_and_item_only_editions(project, config):
    only_essay = write(project, HEAD + "\nA lede.\n\n---\n\n## Thoughts\n\nOne.\n\nTwo.\n")
    edition = load_edition(only_essay, config=config)
    assert edition.items == () and edition.essay.heading == "Thoughts" and len(edition.essay.blocks) == 2
    only_items = write(project, HEAD + "\nLede.\n\n---\n\n1. [A](https://a.example/)\n\n   Sum.\n", "x.md")
    edition = load_edition(only_items, config=config)
    assert len(edition.items) == 1 and edition.essay is None
    assert edition.slug == "2025-01-02" and edition.number is None


def test_numbering_past_nine_and_lazy_summaries(project, config):
    items = "".join(f"{n}. [Item {n}](https://example.com/{n})\n\n    Summary {n}.\n\n" for n in range(1, 13))
    path = write(project, HEAD + "\nLede.\n\n---\n\n" + items + "---\n\nEssay.\n")
    edition = load_edition(path, config=config)
    assert [i.number for i in edition.items] == list(range(1, 13))
    assert edition.items[11].title == "Item 12" and edition.items[11].summary == "Summary 12."
    lazy = write(project, HEAD + "\nLede.\n\n---\n\n1. [A](https://a.example/)\nright under it\n\n"
                 "not indented\n\n2. [B](https://b.example/)\n", "lazy.md")
    parsed = load_edition(lazy, config=config)
    assert [i.summary for i in parsed.items] == ["right under it\n\nnot indented", ""]


def test_front_matter_defaults_and_overrides(project, config):
    path = write(project, """\
        ---
        title: "Weekly   notes"
        date: "2025-03-04T07:00:00-05:00"
        subject: "Notes, week 10"
        slug: week-10
        lang: de
        categories: "a, b"
        ---
        First sentence here. Second one.
        """)
    edition = load_edition(path, config=config)
    assert edition.title == "Weekly notes" and edition.subject == "Notes, week 10"
    assert edition.slug == "week-10" and edition.lang == "de" and edition.categories == ("a", "b")
    assert edition.preheader == "First sentence here."
    assert edition.date.isoformat() == "2025-03-04T07:00:00-05:00"


def test_first_sentence_is_trimmed():
    assert first_sentence("word " * 40) .endswith("…")
    assert len(first_sentence("字" * 200)) == 90
    assert first_sentence("**Bold** start. Rest.") == "Bold start."


def test_domain_of():
    assert domain_of("https://www.example.com/a") == "example.com"
    assert domain_of("https://xn--fsqu00a.xn--0zwm56d/") == "例子.测试"
    assert domain_of("mailto:x@example.com") == ""


BAD = [
    ("no front matter\n", 1, "no front matter"),
    ("---\ntitle: [x\ndate: 2025-01-02T08:00:00+01:00\n---\n", 2, "bad YAML"),
    ("---\ndate: 2025-01-02T08:00:00+01:00\n---\nx\n", 1, "missing title"),
    ("---\ntitle: x\ndate: next tuesday\n---\nx\n", 3, "unparseable date"),
    ("---\ntitle: x\ndate: 2025-01-02\n---\nx\n", 3, "has no time and offset"),
    ("---\ntitle: x\ndate: 2025-01-02T08:00:00\n---\nx\n", 3, "no UTC offset"),
    ("---\ntitle: x\n", 1, "not closed"),
    ("---\ntitle: x\ndate: 2025-01-02T08:00:00+01:00\ncolour: red\n---\nx\n", 4, "unknown front-matter key"),
    ("---\ntitle: x\ndate: 2025-01-02T08:00:00+01:00\nsubject: yes\n---\nx\n", 4, "subject must be text"),
    (HEAD + "\nLede.\n\n---\n\n1. [A](https://a.example/)\n\n2. no link\n", 12, "item 2 has no link"),
    (HEAD + "\nLede.\n\n---\n\n1. [A]()\n", 10, "item 1 has an empty link target"),
    (HEAD + "\nLede.\n\n---\n\n1. [](https://a.example/)\n", 10, "item 1 has an empty title"),
]


@pytest.mark.parametrize("text, line, message", BAD, ids=[b[2] for b in BAD])
def test_bad_input_names_file_and_line(project, config, text, line, message):
    path = project / "bad.md"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(EditionError) as info:
        load_edition(path, config=config)
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert message in str(info.value) and "expected" in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_unreadable_files(project, config):
    with pytest.raises(EditionError, match="no such edition file"):
        load_edition(project / "nope.md", config=config)
    (project / "latin1.md").write_bytes(b"---\ntitle: caf\xe9\n---\n")
    with pytest.raises(EditionError, match="not UTF-8"):
        load_edition(project / "latin1.md", config=config)
    with pytest.raises(EditionError, match="no such essay file"):
        load_edition(EXAMPLE, config=config, essay_path=project / "missing.txt")


def test_markdown_essay_file(project, config):
    essay = write(project, "# Heading\n\nPara with [a link](https://example.com).\n\n- one\n- two\n", "essay.md")
    edition = load_edition(EXAMPLE, config=config, essay_path=essay)
    assert edition.essay.heading == "Heading"
    assert [b.kind for b in edition.essay.blocks] == [BlockKind.PARAGRAPH, BlockKind.LIST]
    assert edition.essay.blocks[1].entries == ("one", "two")


def test_pasted_essay_without_attribution_drops_trailing_furniture(project, config):
    text = "A Title\n\nMarch 3, 2025 · By Jane Doe · 1,024 views\n\nFirst paragraph, a sentence.\n\n" \
           "Second paragraph *with* stars.\n\nShare\nLog in\n"
    essay = write(project, text, "pasted.txt")
    edition = load_edition(EXAMPLE, config=config, essay_path=essay)
    assert edition.essay.heading == "A Title"
    assert [b.text for b in edition.essay.blocks] == ["First paragraph, a sentence.",
                                                      "Second paragraph \\*with\\* stars."]


def test_a_list_inside_a_summary_stays_as_text(project, config):
    path = write(project, HEAD + "\nL\n\n---\n\n1. [A](https://a.example/)\n\n   Sum.\n\n   - x\n   - y\n")
    assert load_edition(path, config=config).items[0].summary == "Sum.\n\nx y"
