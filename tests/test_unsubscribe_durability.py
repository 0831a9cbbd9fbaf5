"""An answered unsubscribe is a committed unsubscribe. Over real HTTP (uvicorn) against the
project's SQLite file: while another process holds the write lock past the web's busy timeout,
every write endpoint answers 503 with Retry-After and changes nothing — never "done"; once the
lock is free the retry commits. And a real concurrent import (the CLI, in a subprocess, of a
large CSV) no longer keeps one-click POSTs waiting: each 200 is committed; the waits are printed."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time

import httpx
import pytest

from newsletter.config import load_secret
from newsletter.store import open_store
from newsletter.store.models import MembershipStatus
from newsletter.tokens import make_token

FORM = {"content-type": "application/x-www-form-urlencoded"}
HOLD = r"""
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


def token(config, purpose, subscriber_id, list_id):
    """A link as the reader's mail carries it: naming the subscriber's never-reused uid."""
    with open_store(config) as store:
        uid = store.get_subscriber_by_id(subscriber_id).uid
    return make_token(load_secret(config), purpose, subscriber_id, list_id, uid=uid)


def status_on(config, subscriber_id, list_name):
    with open_store(config) as store:
        return {m.list_name: m.status for m in store.memberships(subscriber_id)}.get(list_name)


def test_a_locked_database_is_503_with_retry_after_never_done(web_server, monkeypatch):
    from newsletter.web import context

    monkeypatch.setattr(context, "WEB_BUSY_MS", 1000)  # wait 1 s for the lock instead of 10
    url, config = web_server()
    with open_store(config) as store:
        store.create_list("daily", double_opt_in=True, public=True)
        store.add_subscriber("ada@example.org", lists=["daily"])
        ada = store.get_subscriber("ada@example.org")
        daily = store.get_list("daily")
        pending = store.subscribe("bob@example.org", list_ids=[daily.id]).subscriber
    client = httpx.Client(base_url=url, timeout=30)
    client.get("/healthz")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(config.database_url), "6"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        one_click = f"/unsubscribe/{token(config, 'unsubscribe', ada.id, daily.id)}"
        answers = {
            "one-click POST": client.post(one_click, content="List-Unsubscribe=One-Click", headers=FORM),
            "button POST": client.post(one_click, content="", headers=FORM),
            "preferences unsubscribe-all": client.post(f"/preferences/{token(config, 'preferences', ada.id, 0)}",
                                                       data={"action": "unsubscribe-all"}),
            "confirm link": client.get(f"/confirm/{token(config, 'confirm', pending.id, daily.id)}"),
            "subscribe form": client.post("/subscribe", data={"email": "carol@example.org", "list": "daily"}),
        }
        for what, answer in answers.items():
            assert answer.status_code == 503, (what, answer.status_code)
            assert answer.headers["retry-after"].isdigit(), what
            assert "try again" in answer.text.lower(), what
        assert status_on(config, ada.id, "daily") == MembershipStatus.ACTIVE  # nothing claimed done
        assert status_on(config, pending.id, "daily") == MembershipStatus.UNCONFIRMED
        with open_store(config) as store:
            assert store.get_subscriber("carol@example.org") is None
        # the GET page does not write: it still works while the lock is held
        assert client.get(one_click).status_code == 200
    finally:
        holder.wait(30)
    again = client.post(one_click, content="List-Unsubscribe=One-Click", headers=FORM)  # the client's retry
    assert again.status_code == 200
    assert status_on(config, ada.id, "daily") == MembershipStatus.UNSUBSCRIBED


@pytest.mark.slow
def test_one_click_posts_during_a_large_concurrent_import_are_answered_and_committed(web_server, project):
    url, config = web_server()
    readers = 300
    with open_store(config) as store:
        store.create_list("daily", public=True)
        store.create_list("bulk")
        store.import_rows(((f"r{i}@example.org", i + 2, f"r{i}@example.org", f"R {i}", "{}", "active")
                           for i in range(readers)), list_name="daily")
        ids = [store.get_subscriber(f"r{i}@example.org").id for i in range(readers)]
        daily = store.get_list("daily").id
    rows = 400_000
    big = project / "big.csv"
    with open(big, "w", encoding="utf-8") as fh:
        fh.write("email,name,city\n")
        for i in range(rows):
            fh.write(f"bulk{i:07d}@example.com,Bulk Reader {i},City {i % 101}\n")
    client = httpx.Client(base_url=url, timeout=60)
    client.get("/healthz")
    links = {sid: f"/unsubscribe/{token(config, 'unsubscribe', sid, daily)}" for sid in ids}
    importer = subprocess.Popen([sys.executable, "-m", "newsletter", "subscribers", "import", str(big), "--list", "bulk"],
                                cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ))
    waits: list[float] = []
    answers: list[tuple[int, int]] = []
    started = time.monotonic()
    import_seconds, during = None, 0
    for subscriber_id in ids:
        if import_seconds is None and importer.poll() is not None:
            import_seconds = time.monotonic() - started
        during += import_seconds is None
        begun = time.perf_counter()
        answer = client.post(links[subscriber_id],
                             content="List-Unsubscribe=One-Click", headers=FORM)
        waits.append(time.perf_counter() - begun)
        answers.append((subscriber_id, answer.status_code))
        time.sleep(0.02)
    output = importer.communicate(timeout=600)[0]
    import_seconds = import_seconds or time.monotonic() - started
    assert importer.returncode == 0, output
    ok = [s for s, code in answers if code == 200]
    assert all(code in (200, 503) for _, code in answers)
    with open_store(config) as store:
        unsubscribed = {m for m in ids if {x.list_name: x.status for x in store.memberships(m)}["daily"]
                        == MembershipStatus.UNSUBSCRIBED}
        assert store.count_subscribers(list_name="bulk") == rows
    assert set(ok) <= unsubscribed  # every 200 was committed
    assert unsubscribed <= set(ok) | {s for s, code in answers if code == 503} and len(unsubscribed) == len(ok)
    waits.sort()
    print(f"\n{rows:,}-row import in a subprocess ({import_seconds:.1f} s), {len(answers)} one-click POSTs over HTTP, "
          f"{during} of them while it ran: {len(ok)} answered 200 (all committed), "
          f"{len(answers) - len(ok)} answered 503; wait per POST: median {statistics.median(waits) * 1000:.0f} ms, "
          f"p95 {waits[int(len(waits) * 0.95)] * 1000:.0f} ms, max {waits[-1] * 1000:.0f} ms")
    assert during >= 20  # the import really ran alongside
