"""The readers' endpoints over real HTTP: uvicorn on a free 127.0.0.1 port, the project's
database (SQLite, and PostgreSQL: the ``site`` fixture runs each test on both), and the outbox
transport's Maildir as the mailbox the confirmation emails land in."""

from __future__ import annotations

import email
import email.policy
import json
import re
import time

import httpx
import pytest

from newsletter.config import load_secret
from newsletter.store import open_store
from newsletter.store.models import MembershipStatus, SubscriberStatus
from newsletter.tokens import make_token

FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture
def site(web_server, backend_project):
    """A server with three lists: 'daily' (double opt-in, public), 'weekly' (single opt-in,
    public) and 'staff' (private)."""

    def start(**web_settings):
        url, config = web_server(**web_settings)
        with open_store(config) as store:
            store.create_list("daily", description="Every morning", double_opt_in=True, public=True)
            store.create_list("weekly", description="Sundays", public=True)
            store.create_list("staff")
        client = httpx.Client(base_url=url, timeout=10, follow_redirects=False)
        return url, config, client

    return start


def mails_to(config, address: str, count: int = 1, timeout: float = 5.0) -> list[email.message.EmailMessage]:
    """Transactional mail for ``address`` in the outbox, waiting up to ``timeout`` for ``count``
    (mail goes out after the HTTP answer)."""
    folder = config.outbox_path / "_transactional" / "new"
    deadline = time.monotonic() + timeout
    while True:
        found = []
        for path in sorted(folder.glob("*")) if folder.is_dir() else []:
            msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if address.lower() in str(msg["To"]).lower():
                found.append(msg)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def text_of(msg) -> str:
    return msg.get_body(preferencelist=("plain",)).get_content()


def link_in(msg, path: str) -> str:
    found = re.search(rf"(http://127\.0\.0\.1:\d+/{path}/[A-Za-z0-9_.=-]+)", text_of(msg))
    assert found, text_of(msg)
    return found.group(1)


def membership(config, address: str, list_name: str):
    with open_store(config) as store:
        sub = store.get_subscriber(address)
        if sub is None:
            return None, None
        found = [m.status for m in store.memberships(sub.id) if m.list_name == list_name]
        return sub, (found[0] if found else None)


def active_reader(config, address="reader@example.org", lists=("daily",), name="Ada"):
    with open_store(config) as store:
        store.add_subscriber(address, name=name, lists=list(lists))
        sub = store.get_subscriber(address)
        return sub, {l.name: l.id for l in store.lists()}


# -- subscribe and confirm --------------------------------------------------------------------

def test_subscribe_form_is_accessible_and_lists_public_lists_only(site):
    _, _, client = site()
    page = client.get("/subscribe")
    assert page.status_code == 200
    assert '<html lang="en">' in page.text
    assert '<label for="email">' in page.text and 'id="email"' in page.text
    assert 'value="daily"' in page.text and 'value="weekly"' in page.text
    assert "staff" not in page.text
    assert 'name="website"' in page.text  # the honeypot
    assert "<script" not in page.text
    assert page.headers["referrer-policy"] == "no-referrer"


def test_double_opt_in_confirm_then_welcome(site):
    _, config, client = site()
    answer = client.post("/subscribe", data={"email": "new@example.org", "name": "Grace", "list": "daily"})
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    sub, status = membership(config, "new@example.org", "daily")
    assert status == MembershipStatus.UNCONFIRMED and sub.name == "Grace"

    [confirmation] = mails_to(config, "new@example.org")
    assert "Confirm your subscription" in str(confirmation["Subject"])
    url = link_in(confirmation, "confirm")
    page = client.get(url)
    assert page.status_code == 200 and "Subscription confirmed" in page.text
    sub, status = membership(config, "new@example.org", "daily")
    assert status == MembershipStatus.ACTIVE and sub.status == SubscriberStatus.ACTIVE

    again = client.get(url)  # idempotent: a second click changes nothing and sends nothing
    assert again.status_code == 200
    mails = mails_to(config, "new@example.org", count=2)
    assert [str(m["Subject"]).split()[0] for m in mails].count("Welcome") == 1
    time.sleep(0.3)
    assert len(mails_to(config, "new@example.org", count=3, timeout=0.2)) == 2


def test_single_opt_in_list_is_active_at_once(site):
    _, config, client = site()
    answer = client.post("/subscribe", data={"email": "w@example.org", "list": "weekly"})
    assert answer.status_code == 200 and "Thank you for subscribing" in answer.text
    assert membership(config, "w@example.org", "weekly")[1] == MembershipStatus.ACTIVE
    [welcome] = mails_to(config, "w@example.org")
    assert "Welcome" in str(welcome["Subject"])
    assert "/preferences/" in text_of(welcome)


def test_returning_reader_must_confirm_even_a_single_opt_in_list(site):
    _, config, client = site()
    sub, ids = active_reader(config, "back@example.org", lists=("weekly",))
    with open_store(config) as store:
        store.unsubscribe(sub.id, ids["weekly"])
    answer = client.post("/subscribe", data={"email": "back@example.org", "list": "weekly"})
    # the page is the same for every address (no enumeration) and says a confirmation may come
    assert answer.status_code == 200 and "confirmation link first" in answer.text
    [confirm] = mails_to(config, "back@example.org")
    assert membership(config, "back@example.org", "weekly")[1] != MembershipStatus.ACTIVE
    assert client.get(link_in(confirm, "confirm")).status_code == 200
    assert membership(config, "back@example.org", "weekly")[1] == MembershipStatus.ACTIVE


def test_plain_form_from_another_site_works_without_csrf_token(site):
    _, config, client = site()
    answer = client.post("/subscribe", content="email=ext%40example.org&list=daily&list=weekly",
                         headers={**FORM, "origin": "https://blog.example.net",
                                  "referer": "https://blog.example.net/about"})
    assert answer.status_code == 200
    assert membership(config, "ext@example.org", "daily")[1] == MembershipStatus.UNCONFIRMED
    assert membership(config, "ext@example.org", "weekly")[1] is not None


def test_same_answer_whether_or_not_the_address_exists(site):
    _, config, client = site()
    active_reader(config, "known@example.org", lists=("daily",))
    with open_store(config) as store:
        store.suppress("blocked@example.org", "complaint")

    def answer(address):
        page = client.post("/subscribe", data={"email": address, "list": "daily"})
        return page.status_code, page.text.replace(address, "ADDRESS")

    assert answer("known@example.org") == answer("fresh@example.org") == answer("blocked@example.org")
    assert mails_to(config, "blocked@example.org", timeout=0.5) == []


def test_bad_input_gets_the_form_back_with_a_message(site):
    _, config, client = site()
    bad = client.post("/subscribe", data={"email": "not-an-address", "list": "daily"})
    assert bad.status_code == 400 and "valid email address" in bad.text
    assert 'value="not-an-address"' in bad.text
    unknown = client.post("/subscribe", data={"email": "a@example.org", "list": "staff"})
    assert unknown.status_code == 400 and "staff" in unknown.text
    none = client.post("/subscribe", data={"email": "a@example.org"})
    assert none.status_code == 400 and "at least one list" in none.text
    xss = client.post("/subscribe", data={"email": "<script>x</script>@e.org", "list": "daily"})
    assert "<script>x" not in xss.text and "&lt;script&gt;" in xss.text
    with open_store(config) as store:
        assert store.get_subscriber("a@example.org") is None


def test_honeypot_answers_as_usual_and_does_nothing(site):
    _, config, client = site()
    page = client.post("/subscribe", data={"email": "bot@example.org", "list": "daily", "website": "http://spam"})
    assert page.status_code == 200 and "Check your inbox" in page.text
    with open_store(config) as store:
        assert store.get_subscriber("bot@example.org") is None
    assert mails_to(config, "bot@example.org", timeout=0.5) == []


def test_per_ip_limit(site):
    _, config, client = site(subscribe_per_ip_per_hour=3)
    codes = [client.post("/subscribe", data={"email": f"p{i}@example.org", "list": "daily"}).status_code
             for i in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    limited = client.post("/subscribe", data={"email": "p9@example.org", "list": "daily"})
    assert limited.headers["retry-after"] == "3600"
    with open_store(config) as store:
        assert store.get_subscriber("p9@example.org") is None


def test_proxy_header_ignored_unless_trusted(site):
    _, _, client = site(subscribe_per_ip_per_hour=1)
    first = client.post("/subscribe", data={"email": "x1@example.org", "list": "daily"},
                        headers={"x-forwarded-for": "203.0.113.1"})
    second = client.post("/subscribe", data={"email": "x2@example.org", "list": "daily"},
                         headers={"x-forwarded-for": "203.0.113.2"})
    assert (first.status_code, second.status_code) == (200, 429)  # a forged header buys nothing


def test_trusted_proxy_header_separates_clients(site):
    _, _, client = site(subscribe_per_ip_per_hour=1, trust_proxy_headers=True)
    codes = [client.post("/subscribe", data={"email": f"y{i}@example.org", "list": "daily"},
                         headers={"x-forwarded-for": f"198.51.100.7, 203.0.113.{i % 2}"}).status_code
             for i in range(3)]
    assert codes == [200, 200, 429]


def test_per_address_limit_stops_confirmation_mail_bombing(site):
    _, config, client = site(confirmations_per_address_per_day=2)
    pages = [client.post("/subscribe", data={"email": "victim@example.org", "list": "daily"}) for _ in range(5)]
    assert {p.status_code for p in pages} == {200}
    assert len({p.text for p in pages}) == 1  # the visitor cannot tell the limit was hit
    assert len(mails_to(config, "victim@example.org", count=2)) == 2
    time.sleep(0.5)
    assert len(mails_to(config, "VICTIM@example.org", count=3, timeout=0.2)) == 2


# -- unsubscribe -------------------------------------------------------------------------------

def unsubscribe_url(config, sub, list_id):
    return f"/unsubscribe/{make_token(load_secret(config), 'unsubscribe', sub.id, list_id, uid=sub.uid)}"


def test_link_scanner_gets_never_unsubscribe(site):
    _, config, client = site()
    sub, lists = active_reader(config)
    url = unsubscribe_url(config, sub, lists["daily"])
    for _ in range(3):
        page = client.get(url)
        assert page.status_code == 200
        assert 'method="post"' in page.text and "<button" in page.text
    assert client.head(url).status_code in (200, 405)
    assert membership(config, sub.email, "daily")[1] == MembershipStatus.ACTIVE
    assert "r***@example.org" in page.text and "reader@example.org" not in page.text


def test_one_click_post_unsubscribes_idempotently_without_redirect(site):
    _, config, client = site()
    sub, lists = active_reader(config, lists=("daily", "weekly"))
    url = unsubscribe_url(config, sub, lists["daily"])
    for _ in range(2):  # the replay answers the same
        done = client.post(url, content="List-Unsubscribe=One-Click", headers=FORM)
        assert done.status_code == 200 and "unsubscribed" in done.text
        assert "location" not in done.headers
    assert membership(config, sub.email, "daily")[1] == MembershipStatus.UNSUBSCRIBED
    assert membership(config, sub.email, "weekly")[1] == MembershipStatus.ACTIVE
    with open_store(config) as store:  # the next send leaves the reader out
        assert [r.email for r in store.recipients("daily")] == []
        assert [r.email for r in store.recipients("weekly")] == [sub.email]


def test_one_click_post_as_multipart_form_data(site):
    _, config, client = site()
    sub, lists = active_reader(config)
    done = client.post(unsubscribe_url(config, sub, lists["daily"]), files={"List-Unsubscribe": (None, "One-Click")})
    assert done.status_code == 200
    assert membership(config, sub.email, "daily")[1] == MembershipStatus.UNSUBSCRIBED


def test_page_button_post_and_all_lists_token(site):
    _, config, client = site()
    sub, _ = active_reader(config, lists=("daily", "weekly"))
    done = client.post(unsubscribe_url(config, sub, 0), content="", headers=FORM)
    assert done.status_code == 200
    with open_store(config) as store:
        assert store.get_subscriber_by_id(sub.id).status == SubscriberStatus.UNSUBSCRIBED
        assert all(m.status == MembershipStatus.UNSUBSCRIBED for m in store.memberships(sub.id))


def tampered(token: str, subscriber_id: int) -> str:
    """The same MAC on a payload naming another subscriber."""
    import base64

    payload, mac = token.split(".")
    sid, lid, exp, uid = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode().split(".")
    other = f"{subscriber_id}.{lid}.{exp}.{uid}".encode()
    return base64.urlsafe_b64encode(other).rstrip(b"=").decode() + "." + mac


def test_bad_tokens_get_400_and_change_nothing(site):
    _, config, client = site()
    victim, lists = active_reader(config, "victim@example.org")
    attacker, _ = active_reader(config, "attacker@example.org")
    secret = load_secret(config)
    bad = {
        "forged": make_token(b"not-the-secret-0123456789", "unsubscribe", victim.id, lists["daily"], uid=victim.uid),
        "tampered": tampered(make_token(secret, "unsubscribe", attacker.id, lists["daily"], uid=attacker.uid), victim.id),
        "garbage": "abc.def",
        "wrong purpose": make_token(secret, "preferences", victim.id, 0, uid=victim.uid),
        "expired": make_token(secret, "unsubscribe", victim.id, lists["daily"], expires=int(time.time()) - 10, uid=victim.uid),
    }
    for label, token in bad.items():
        for method in ("GET", "POST"):
            page = client.request(method, f"/unsubscribe/{token}", content="List-Unsubscribe=One-Click", headers=FORM)
            assert page.status_code == 400, (label, method)
            assert "victim" not in page.text and "This link is not valid" in page.text
        assert client.get(f"/preferences/{token}").status_code == 400 or label == "wrong purpose"
    assert membership(config, "victim@example.org", "daily")[1] == MembershipStatus.ACTIVE
    # a preferences or unsubscribe token never confirms anything
    assert client.get(f"/confirm/{make_token(secret, 'unsubscribe', victim.id, 0, uid=victim.uid)}").status_code == 400
    expired = make_token(secret, "confirm", victim.id, 0, expires=int(time.time()) - 1, uid=victim.uid)
    assert client.get(f"/confirm/{expired}").status_code == 400
    assert client.get(f"/preferences/{make_token(secret, 'unsubscribe', victim.id, 0, uid=victim.uid)}").status_code == 400
    assert client.get(f"/preferences/{make_token(secret, 'unsubscribe', victim.id, 0, uid=victim.uid)}/data.json").status_code == 400


def test_expired_confirmation_link_does_not_confirm(site):
    _, config, client = site()
    client.post("/subscribe", data={"email": "late@example.org", "list": "daily"})
    sub, _ = membership(config, "late@example.org", "daily")
    token = make_token(load_secret(config), "confirm", sub.id, 0, expires=int(time.time()) - 60, uid=sub.uid)
    assert client.get(f"/confirm/{token}").status_code == 400
    assert membership(config, "late@example.org", "daily")[1] == MembershipStatus.UNCONFIRMED


# -- preferences -------------------------------------------------------------------------------

def test_preferences_change_lists_and_name_and_download_data(site):
    _, config, client = site()
    sub, lists = active_reader(config, lists=("daily",))
    url = f"/preferences/{make_token(load_secret(config), 'preferences', sub.id, 0, uid=sub.uid)}"
    page = client.get(url)
    assert page.status_code == 200 and "reader@example.org" in page.text
    assert re.search(r'value="daily" checked', page.text) and not re.search(r'value="weekly" checked', page.text)
    assert '<label for="name">' in page.text

    saved = client.post(url, data={"name": "Ada L.", "list": ["weekly"], "action": "save"})
    assert saved.status_code == 303 and saved.headers["location"].endswith("?saved=1")
    assert "saved" in client.get(saved.headers["location"]).text
    after, status = membership(config, sub.email, "weekly")
    assert after.name == "Ada L." and status == MembershipStatus.ACTIVE
    assert membership(config, sub.email, "daily")[1] == MembershipStatus.UNSUBSCRIBED

    data = client.get(url + "/data.json")
    assert data.status_code == 200 and data.headers["content-type"].startswith("application/json")
    assert "attachment" in data.headers["content-disposition"]
    exported = json.loads(data.text)
    assert exported["email"] == sub.email and exported["name"] == "Ada L."

    gone = client.post(url, data={"action": "unsubscribe-all"})
    assert gone.status_code == 200
    with open_store(config) as store:
        assert store.get_subscriber_by_id(sub.id).status == SubscriberStatus.UNSUBSCRIBED
        store.erase(sub.email)
    assert client.get(url + "/data.json").status_code == 400  # erased: nothing left to download


def test_unsubscribe_page_links_to_preferences(site):
    _, config, client = site()
    sub, lists = active_reader(config)
    page = client.get(unsubscribe_url(config, sub, lists["daily"]))
    prefs = re.search(r'href="(/preferences/[^"]+)"', page.text).group(1)
    assert client.get(prefs).status_code == 200


def test_web_version_links_explain_themselves(site):
    _, _, client = site()
    for path in ("/unsubscribe", "/preferences"):
        page = client.get(path)
        assert page.status_code == 200 and "link at the bottom" in page.text


# -- language and errors -----------------------------------------------------------------------

def test_chinese_from_accept_language_or_newsletter_lang(site, project):
    _, config, client = site()
    zh = client.get("/subscribe", headers={"accept-language": "zh-CN,zh;q=0.9,en;q=0.8"})
    assert '<html lang="zh-CN">' in zh.text and "电子邮件地址" in zh.text
    assert zh.headers["content-language"] == "zh-CN"
    en = client.get("/subscribe", headers={"accept-language": "fr-FR, en;q=0.5"})
    assert '<html lang="en">' in en.text


def test_not_found_is_a_page(site):
    _, _, client = site()
    page = client.get("/nothing-here")
    assert page.status_code == 404 and "Page not found" in page.text


def test_module_level_app_loads_config_lazily(project, monkeypatch):
    import asyncio

    from newsletter.web import LazyApp

    monkeypatch.setenv("NEWSLETTER_CONFIG", str(project / "newsletter.toml"))
    lazy = LazyApp()
    assert lazy._app is None
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": "/healthz", "raw_path": b"/healthz", "query_string": b"",
             "headers": [], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "root_path": ""}
    asyncio.run(lazy(scope, receive, send))
    assert sent[0]["status"] == 200 and lazy._app is not None


# -- the command -------------------------------------------------------------------------------

def test_serve_command_runs_the_app(project):
    import os
    import subprocess
    import sys

    from tests.conftest import free_port, wait_for_http

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "serve", "--port", str(port), "--no-access-log"],
                            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz")
        page = httpx.get(f"http://127.0.0.1:{port}/subscribe")
        assert page.status_code == 200 and "Subscribe to Test Daily" in page.text
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert f"http://127.0.0.1:{port}" in err.decode()


def test_serve_without_a_secret_creates_it_like_every_command(project, cli):
    """(issue 9: it used to stop with "no secret"; now it makes one, says so, and goes on. Port 1
    is privileged or taken, so the command stops right after, with one line.)"""
    import socket

    (project / ".newsletter-secret").unlink()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = cli("serve", "--port", str(busy.getsockname()[1]))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "created a new signing secret" in result.output and "cannot listen on 127.0.0.1:" in result.output
    assert (project / ".newsletter-secret").stat().st_mode & 0o777 == 0o600


def test_form_with_too_many_fields_is_refused_not_a_server_error(site):
    _, config, client = site()
    body = "email=many%40example.org&list=daily&" + "&".join(["x=1"] * 200)
    page = client.post("/subscribe", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert page.status_code == 413
    with open_store(config) as store:
        assert store.get_subscriber("many@example.org") is None
