"""`newsletter add EDITION URL`: the page fetched from a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import shutil

import pytest

from newsletter.edition.source import load_edition
from newsletter.config import load_config
from newsletter.sources.fetch import FetchError, decode_html, fetch_page, link_item, page_from_html
from newsletter.sources.urls import strip_tracking, url_key
from tests.conftest import REPO
from tests.local_http import LocalSite, Route

AGENT = "newsletter/test (Test Daily link preview)"

UTF8_OG = """<!doctype html><html><head><meta charset="utf-8">
<title>Fallback title | Site</title>
<meta property="og:title" content="Open models close the gap &amp; more">
<meta property="og:description" content="A *bold* claim: open   weights
 now match closed ones.">
<meta name="description" content="not this one">
<link rel="canonical" href="/story/open-models?utm_source=twitter&amp;id=7&amp;fbclid=abc">
</head><body><p>…</p></body></html>"""

GBK_PLAIN = """<html><head><meta http-equiv="Content-Type" content="text/html; charset=gb2312">
<title>国产大模型发布新版本</title>
<meta name="description" content="新版本在推理速度上提升了三倍，支持更长的上下文。">
</head><body>正文</body></html>"""

TWITTER_ONLY = """<html><head><title>T</title><meta name="twitter:title" content="Tweet title">
<meta name="twitter:description" content="Tweet summary"></head></html>"""


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def site():
    routes = {
        "/og": Route(UTF8_OG.encode("utf-8")),
        "/gbk": Route(GBK_PLAIN.encode("gbk"), content_type="text/html"),
        # charset only in the HTTP header, none in the document
        "/gbk-header": Route(GBK_PLAIN.replace("; charset=gb2312", "").encode("gb18030"),
                             content_type="text/html; charset=GBK"),
        # no charset declared anywhere: detected
        "/gbk-undeclared": Route(("<html><head><title>人工智能每日新闻速递：开源模型与算力基础设施</title>"
                                  "</head><body>" + "开源模型在多项评测中追平闭源模型，算力成本继续下降。" * 20
                                  + "</body></html>").encode("gb18030"), content_type="text/html"),
        "/twitter": Route(TWITTER_ONLY.encode()),
        "/pdf": Route(b"%PDF-1.7", content_type="application/pdf"),
        "/missing": Route(b"gone", status=404, content_type="text/plain"),
        "/huge": Route(b"<html><head><title>Huge page</title></head><body>" + b"x" * 65536,
                       repeat=200),  # ~13 MB
        "/to-ftp": Route(location="ftp://127.0.0.1/file", status=302),
        "/slow": Route(UTF8_OG.encode(), delay=3),
    }
    for i in range(1, 8):  # /r1 -> /r2 -> … -> /r7 -> /og
        routes[f"/r{i}"] = Route(location=f"/r{i + 1}" if i < 7 else "/og", status=301)
    with LocalSite(routes) as s:
        yield s


def test_og_tags_canonical_url_and_tracking_parameters(site):
    page = fetch_page(site.url("/og?utm_medium=email"), agent=AGENT)
    assert page.title == "Open models close the gap & more"
    assert page.summary == "A *bold* claim: open weights now match closed ones."
    assert page.url == site.url("/story/open-models?id=7")  # canonical, tracking removed
    assert page.charset == "utf-8"
    path, headers = site.requests[-1]
    assert headers["user-agent"] == AGENT


def test_twitter_tags_when_there_is_no_og(site):
    page = fetch_page(site.url("/twitter"), agent=AGENT)
    assert (page.title, page.summary) == ("Tweet title", "Tweet summary")


@pytest.mark.parametrize("path", ["/gbk", "/gbk-header", "/gbk-undeclared"])
def test_chinese_pages_in_gbk(site, path):
    page = fetch_page(site.url(path), agent=AGENT)
    if path == "/gbk-undeclared":
        assert page.title == "人工智能每日新闻速递：开源模型与算力基础设施"
    else:
        assert page.title == "国产大模型发布新版本"
        assert page.summary == "新版本在推理速度上提升了三倍，支持更长的上下文。"
    assert page.charset == "gb18030"
    assert page.url == site.url(path)  # no canonical declared: the fetched URL


def test_gb2312_declared_but_gbk_characters_decode():
    # 镕 is in GBK but not in GB2312: a strict GB2312 decoder would fail on this page
    body = '<meta charset="gb2312"><title>朱镕基</title>'.encode("gbk")
    assert page_from_html(body, "https://example.cn/").title == "朱镕基"
    assert decode_html("café".encode("latin-1"), "iso-8859-1")[0] == "café"


def test_redirects_are_followed_up_to_five(site):
    assert fetch_page(site.url("/r3"), agent=AGENT).title.startswith("Open models")  # 5 hops
    with pytest.raises(FetchError, match="more than 5 redirects"):
        fetch_page(site.url("/r1"), agent=AGENT)  # 7 hops


def test_only_http_and_https(site):
    with pytest.raises(FetchError, match="only http and https"):
        fetch_page("file:///etc/passwd", agent=AGENT)
    with pytest.raises(FetchError, match="redirected to 'ftp://"):
        fetch_page(site.url("/to-ftp"), agent=AGENT)


def test_size_cap_reads_only_the_start_of_a_huge_page(site):
    page = fetch_page(site.url("/huge"), agent=AGENT, max_bytes=256 * 1024)
    assert page.title == "Huge page" and page.truncated


def test_errors_are_one_line(site):
    with pytest.raises(FetchError, match=r"not a web page \(application/pdf\)"):
        fetch_page(site.url("/pdf"), agent=AGENT)
    with pytest.raises(FetchError, match="answered 404"):
        fetch_page(site.url("/missing"), agent=AGENT)
    with pytest.raises(FetchError, match="no answer within 0.5 s"):
        fetch_page(site.url("/slow"), agent=AGENT, timeout=0.5)


def test_given_title_and_summary_win_over_the_page(site):
    item = link_item(site.url("/og"), title="Mine", summary=None, agent=AGENT)
    assert item.title == "Mine" and item.summary.startswith("A \\*bold\\* claim")
    item = link_item(site.url("/og"), title=None, summary="My summary", agent=AGENT)
    assert item.title.startswith("Open models") and item.summary == "My summary"


def test_url_helpers():
    assert strip_tracking("https://a.com/x?b=2&utm_source=x&a=1&gclid=9#top") == "https://a.com/x?b=2&a=1#top"
    assert strip_tracking("https://a.com/x?q=1") == "https://a.com/x?q=1"
    assert url_key("http://WWW.Example.com:80/a/?b=2&a=1&utm_medium=x#f") == url_key("https://example.com/a?a=1&b=2")
    assert url_key("https://example.com/a") != url_key("https://example.com/b")


# -- the command -------------------------------------------------------------------------------
@pytest.fixture
def edition(project):
    (project / "editions").mkdir()
    return shutil.copy(REPO / "editions" / "2026-11-24.md", project / "editions" / "2026-11-24.md")


def test_add_fetches_title_summary_and_canonical_link(cli, site, edition):
    before = len(load_edition(edition, config=load_config()).items)
    result = cli("add", str(edition), site.url("/og?fbclid=1"))
    assert result.exit_code == 0, result.output
    assert "title:   Open models close the gap & more" in result.stderr
    items = load_edition(edition, config=load_config()).items
    assert len(items) == before + 1
    new = items[-1]
    assert new.title == "Open models close the gap & more"
    assert new.url == site.url("/story/open-models?id=7")
    assert new.summary == "A \\*bold\\* claim: open weights now match closed ones."  # literal, not emphasis


def test_add_with_no_network_still_adds_a_titled_item(cli, edition):
    from tests.conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}/story?utm_source=x"
    result = cli("add", str(edition), dead, "--title", "Given title")
    assert result.exit_code == 0, result.output
    warning = [l for l in result.stderr.splitlines() if "not fetched" in l]
    assert len(warning) == 1 and "cannot fetch" in warning[0]
    new = load_edition(edition, config=load_config()).items[-1]
    assert new.title == "Given title" and "utm_source" not in new.url
    failed = cli("add", str(edition), dead)
    assert failed.exit_code == 2 and "Traceback" not in failed.output
    assert len(failed.stderr.strip().splitlines()) == 1 and "cannot fetch" in failed.stderr


def test_add_refuses_a_non_http_address_before_fetching(cli, edition, site):
    result = cli("add", str(edition), "javascript:alert(1)", "--title", "x")
    assert result.exit_code == 2 and "not an http(s) address" in result.stderr
    assert site.requests == []


def test_xhtml_declaration_and_text_fragments():
    body = '<?xml version="1.0" encoding="gbk"?><html><head><title>标题</title></head></html>'.encode("gbk")
    assert page_from_html(body, "https://x.example/").title == "标题"
    assert strip_tracking("https://a.com/x#:~:text=hello") == "https://a.com/x"
    assert strip_tracking("https://a.com/x#section") == "https://a.com/x#section"
