"""The pure parts behind the readers' pages: language choice, the sliding-window limiter (on a
real SQLite file and a real PostgreSQL database), web-version depersonalization."""

from __future__ import annotations

from newsletter.web.archive import depersonalize, neutral_values, valid_slug
from newsletter.config import load_config
from newsletter.web.i18n import CATALOGS, EN, parse_accept_language, pick_lang, quote_list_names, translator
from newsletter.store import open_rate_limiter, open_store
from newsletter.web.signup import address_bucket
from newsletter.render.rendered import placeholder


def test_accept_language_ranking_and_fallback():
    assert parse_accept_language("fr;q=0.5, zh-CN, en;q=0.8, de;q=0") == ["zh-CN", "en", "fr"]
    assert pick_lang("en", "zh-TW,zh;q=0.9") == "zh-CN"
    assert pick_lang("zh-CN", "fr-FR, de;q=0.9") == "zh-CN"  # nothing we speak: the newsletter's
    assert pick_lang("zh-CN", "en-GB;q=0.7, ja") == "en"
    assert pick_lang("pt", None) == "en"
    assert pick_lang("en", "zh;q=bogus, en") == "en"


def test_catalogs_are_complete_and_formatting_works():
    for lang, catalog in CATALOGS.items():
        assert set(catalog) == set(EN), lang
    t = translator("zh-CN")
    assert t("subscribe.title", name="AI 日报") == "订阅《AI 日报》"
    assert quote_list_names(["a", "b"], "zh-CN") == "《a》、《b》"
    assert quote_list_names(["a"], "en") == "“a”"


def test_sliding_window(db_url):
    limiter = open_rate_limiter(db_url)
    assert [limiter.hit("ip:1", 2, 60, now=1000 + i) for i in range(3)] == [True, True, False]
    assert limiter.hit("ip:2", 2, 60, now=1002)  # buckets are separate
    assert not limiter.hit("ip:1", 2, 60, now=1059)  # the first is still inside the window
    assert limiter.hit("ip:1", 2, 60, now=1060.5)  # ...and now it has slid out
    assert limiter.count("ip:1", 60, now=1060.5) == 2
    assert all(limiter.hit("any", 0, 60) for _ in range(5))  # 0 = no limit
    assert limiter.prune(now=1000 + 3 * 86400) == 4  # refused and unlimited actions left no rows
    limiter.close()


def test_limits_are_shared_between_processes_through_the_database(db_url):
    one, two = open_rate_limiter(db_url), open_rate_limiter(db_url)
    assert one.hit("b", 1, 60, now=10)
    assert not two.hit("b", 1, 60, now=11)
    assert two.count("b", 60, now=12) == 1
    one.close()
    two.close()


def test_a_refused_write_is_one_store_error_and_nothing_is_recorded(db_url):
    """The limiter's write fails (here: the table is gone): one StoreError line, which the web
    answers with 503; the transaction left nothing behind."""
    import pytest

    from newsletter.errors import StoreError

    limiter = open_rate_limiter(db_url)
    assert limiter.hit("b", 5, 60, now=10)
    with open_store(db_url) as store:
        store.conn.execute("ALTER TABLE rate_events RENAME TO rate_events_gone")
    with pytest.raises(StoreError) as err:
        limiter.hit("b", 5, 60, now=11)
    assert "\n" not in str(err.value) and "rate_events" in str(err.value)
    with open_store(db_url) as store:
        store.conn.execute("ALTER TABLE rate_events_gone RENAME TO rate_events")
    assert limiter.count("b", 60, now=12) == 1
    limiter.close()


def test_address_bucket_hides_and_normalises_the_address():
    bucket = address_bucket("mail", " Victim@Example.org ")
    assert bucket == address_bucket("mail", "victim@example.org")
    assert "victim" not in bucket and bucket.startswith("mail:")


def test_depersonalize_prefers_the_template_fallback(project):
    config = load_config()
    values = neutral_values(config, "en")
    text = f"Hi {placeholder('name', 'friend')} / {placeholder('name')} <{placeholder('email')}> " \
           f"{placeholder('attr.city')}|{placeholder('unsubscribe_url')}"
    assert depersonalize(text, values, html=False) == \
        "Hi friend / reader <your email address> |https://news.example.com/unsubscribe"
    assert "&lt;b&gt;" in depersonalize(placeholder("name", "<b>"), values, html=True)


def test_slugs_from_urls_cannot_walk_the_file_system():
    assert valid_slug("2026-11-24") and valid_slug("ai-daily.42")
    for bad in ("", "../x", "a/b", ".hidden", "a..b", "x" * 200):
        assert not valid_slug(bad)
