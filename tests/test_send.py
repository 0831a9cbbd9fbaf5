"""`send` end to end: the outbox by default, SES on moto, faults on the fault endpoint, resume after
SIGKILL, two processes at once, Ctrl-C, test sends, dry runs, `sends ls|show`."""

from __future__ import annotations

import collections
import email
import mailbox
import os
import shutil
import signal
import subprocess
import sys
import time
from email import policy
from pathlib import Path

import boto3
import pytest

from conftest import SAMPLES
from fake_ses import FakeSes
from test_transport import smtp_server  # noqa: F401  (the aiosmtpd fixture)
from newsletter.config import load_config, load_secret
from newsletter.store.ledger import Ledger
from newsletter.render.rendered import RenderedEmail, placeholder
from newsletter.send.job import SendJob, SendOptions, send_test
from newsletter.store import open_store
from newsletter.tokens import verify_token

EDITION = "editions/2025-10-14.md"
SLUG = "2025-10-14"


def add_readers(n: int, list_name: str = "daily") -> list[str]:
    config = load_config()
    with open_store(config) as store:
        if store.get_list(list_name) is None:
            store.create_list(list_name)
        emails = []
        for i in range(n):
            address = f"reader{i:04d}@example.com"
            name = "张伟" if i % 3 == 0 else f"Reader {i}"
            store.add_subscriber(address, name=name, lists=[list_name])
            emails.append(address)
    return emails


@pytest.fixture
def edition(project) -> Path:
    (project / "editions").mkdir(exist_ok=True)
    shutil.copy(SAMPLES / "2025-10-14-ai-digest.md", project / EDITION)
    return project / EDITION


def use_ses(project: Path, endpoint: str) -> None:
    with open(project / "newsletter.toml", "a", encoding="utf-8") as fh:
        fh.write(f'\n[ses]\nendpoint_url = "{endpoint}"\nregion = "us-east-1"\n')


def outbox_messages(project: Path, slug: str = SLUG) -> list[email.message.EmailMessage]:
    box = mailbox.Maildir(project / "outbox" / slug, factory=None, create=False)
    return [email.message_from_bytes(box.get_bytes(k), policy=policy.default) for k in box.keys()]


def live_workers(slug: str = SLUG) -> int:
    """How many processes are working on the send right now."""
    with Ledger.open(load_config()) as ledger:
        send = ledger.find_send(slug)
        return len(ledger.live_workers(send.id)) if send else 0


def ledger_counts(slug: str = SLUG) -> dict[str, int]:
    with Ledger.open(load_config()) as ledger:
        send = ledger.find_send(slug)
        return dict(ledger.progress(send.id).counts) if send else {}


# -- the outbox, through the CLI ------------------------------------------------------------------

@pytest.mark.usefixtures("backend_project")  # on both engines
def test_send_to_the_outbox(project, edition, cli):
    readers = add_readers(5)
    result = cli("send", EDITION, "--list", "daily", "--yes")
    assert result.exit_code == 0, result.output
    assert "nothing leaves this machine" in result.output
    assert f"{SLUG}: sent 5, failed 0" in result.output
    messages = outbox_messages(project)
    assert sorted(m["To"].addresses[0].addr_spec for m in messages) == readers
    secret = load_secret(load_config())
    for msg in messages:
        for header in ("From", "To", "Reply-To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe",
                       "List-Unsubscribe-Post"):
            assert len(msg.get_all(header, [])) == 1, header
        assert msg["Subject"] == "2025.10.14 全球AI新闻速递"
        url = str(msg["List-Unsubscribe"]).split("<", 1)[1].split(">", 1)[0]
        assert url.startswith("https://news.example.com/unsubscribe/")
        claims = verify_token(secret, "unsubscribe", url.rsplit("/", 1)[1])
        with open_store(load_config()) as store:
            assert store.get_subscriber_by_id(claims.subscriber_id).email == msg["To"].addresses[0].addr_spec
            assert claims.list_id == store.get_list("daily").id
        text = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        assert url in text and url in html.replace("&amp;", "&")
        assert "https://news.example.com/archive/2025-10-14" in text and "/archive/2025-10-14" in html
    assert ledger_counts() == {"sent": 5}
    again = cli("send", EDITION, "--list", "daily", "--yes")
    assert again.exit_code == 0 and "nothing to send" in again.output
    assert len(outbox_messages(project)) == 5


def test_send_asks_for_confirmation_and_refuses_without_a_terminal(project, edition, cli):
    add_readers(2)
    result = cli("send", EDITION, "--list", "daily")
    assert result.exit_code == 2
    assert "pass --yes" in result.output
    assert not (project / "outbox").exists() and ledger_counts() == {}


def test_dry_run_shows_a_sample_and_writes_nothing(project, edition, cli):
    add_readers(3)
    result = cli("send", EDITION, "--list", "daily", "--dry-run")
    assert result.exit_code == 0, result.output
    for expected in ("edition:    2025-10-14", "recipients: 3", "list:       daily", "sample message",
                     "List-Unsubscribe-Post: List-Unsubscribe=One-Click", "dry run: nothing was sent or written"):
        assert expected in result.output
    assert not (project / "outbox").exists()
    assert ledger_counts() == {}


def test_test_send_is_prefixed_and_not_recorded(project, edition, cli):
    add_readers(3)
    # no --yes (and no terminal): a test reaches only the addresses given
    result = cli("send", EDITION, "--list", "daily", "--test", "me@example.com", "--test", "reader0001@example.com")
    assert result.exit_code == 0, result.output
    assert not (project / "outbox" / SLUG).exists()  # never in the real send's Maildir
    messages = outbox_messages(project, f"_test/{SLUG}")
    assert sorted(m["To"].addresses[0].addr_spec for m in messages) == ["me@example.com", "reader0001@example.com"]
    assert all(m["Subject"] == "[TEST] 2025.10.14 全球AI新闻速递" for m in messages)
    assert ledger_counts() == {}
    assert "no sends yet" in cli("sends", "ls").output


def test_check_errors_refuse_the_send(project, edition, cli):
    add_readers(1)
    toml = (project / "newsletter.toml").read_text(encoding="utf-8")
    (project / "newsletter.toml").write_text(toml.replace('postal_address = "1 Example Street, Springfield"\n', ""),
                                            encoding="utf-8")
    result = cli("send", EDITION, "--list", "daily", "--yes")
    assert result.exit_code == 1
    assert "refusing to send" in result.output
    assert not (project / "outbox").exists()


def test_unknown_list_is_one_line(project, edition, cli):
    result = cli("send", EDITION, "--list", "nope", "--yes")
    assert result.exit_code == 2
    assert "error: no list named 'nope'" in result.output
    assert "Traceback" not in result.output


@pytest.mark.usefixtures("backend_project")  # on both engines
def test_sends_ls_and_show(project, edition, cli):
    add_readers(4)
    assert cli("send", EDITION, "--list", "daily", "--yes").exit_code == 0
    listing = cli("sends", "ls")
    assert listing.exit_code == 0
    lines = listing.output.strip().splitlines()
    assert lines[0].split()[:5] == ["EDITION", "LIST", "TRANSPORT", "READERS", "SENT"]
    assert lines[1].split()[:5] == [SLUG, "daily", "outbox", "4", "4"]
    shown = cli("sends", "show", SLUG)
    assert "sent:       4" in shown.output and "status:     finished" in shown.output
    missing = cli("sends", "show", "2020-01-01")
    assert missing.exit_code == 2 and "no send for edition" in missing.output


@pytest.mark.usefixtures("backend_project")  # on both engines
def test_readers_who_unsubscribe_are_not_sent_and_suppressed_are_not_frozen(project, edition, cli):
    add_readers(4)
    with open_store(load_config()) as store:
        store.suppress("reader0000@example.com", "complaint")
        store.unsubscribe(store.get_subscriber("reader0001@example.com").id)
    assert cli("send", EDITION, "--list", "daily", "--yes").exit_code == 0
    assert sorted(m["To"].addresses[0].addr_spec for m in outbox_messages(project)) == [
        "reader0002@example.com", "reader0003@example.com"]


# -- SES on moto ------------------------------------------------------------------------------------

@pytest.mark.usefixtures("backend_project")  # on both engines
def test_send_through_ses_on_moto(project, edition, cli, moto):
    boto3.client("ses", region_name="us-east-1", endpoint_url=moto).verify_domain_identity(Domain="example.com")
    use_ses(project, moto)
    readers = add_readers(3)
    result = cli("send", EDITION, "--list", "daily", "--transport", "ses", "--yes")
    assert result.exit_code == 0, result.output
    assert "pacing:     1 messages/s" in result.output  # moto's account max send rate
    import json
    import urllib.request

    data = json.loads(urllib.request.urlopen(moto + "/moto-api/data.json", timeout=5).read())
    received = data["ses"]["RawMessage"]
    assert len(received) == 3  # one message per reader (moto lists each To address twice)
    got = sorted({email.utils.parseaddr(d)[1] for m in received for d in m["destinations"]})
    assert got == readers
    with Ledger.open(load_config()) as ledger:
        ids = {r["provider_message_id"] for r in ledger.deliveries(ledger.find_send(SLUG).id)}
    assert ids == {m["id"] for m in received}


# -- faults on the fault endpoint ----------------------------------------------------------------------

@pytest.fixture
def fake_ses(project):
    server = FakeSes().start()
    use_ses(project, server.url)
    yield server
    server.stop()


def small_edition() -> RenderedEmail:
    return RenderedEmail(slug=SLUG, subject="Subject", preheader="", lang="en",
                         html=f"<p>Hi {placeholder('name', 'there')}</p><a href=\"{placeholder('unsubscribe_url')}\">u</a>",
                         text=f"Hi {placeholder('name', 'there')}\n{placeholder('unsubscribe_url')}\n", web_url="")


def run_job(**options):
    defaults = dict(transport="ses", concurrency=4, backoff_base=0.01, backoff_cap=0.05)
    defaults.update(options)
    job = SendJob(load_config(), small_edition(), "daily", SendOptions(**defaults))
    try:
        return job.run()
    finally:
        job.close()


def per_reader(fake: FakeSes) -> collections.Counter:
    return collections.Counter(to for m in fake.messages for to in m["to"])


def test_throttling_and_5xx_are_retried_and_never_failures(project, fake_ses):
    readers = add_readers(30)
    fake_ses.configure(queue=["throttle", "throttle", "5xx", "ok", "503", "throttle"], throttle_every=7)
    report = run_job()
    assert report.exit_code == 0
    assert report.progress.sent == 30 and report.progress.failed == 0 and report.progress.retries > 0
    assert per_reader(fake_ses) == {r: 1 for r in readers}
    assert ledger_counts() == {"sent": 30}


@pytest.mark.usefixtures("backend_project")  # on both engines
def test_rejected_reader_fails_and_the_send_goes_on(project, fake_ses, cli):
    readers = add_readers(6)
    fake_ses.configure(reject=["reader0002@example.com"])
    report = run_job()
    assert report.exit_code == 1
    assert report.progress.sent == 5 and report.progress.failed == 1
    assert report.failures[0][0] == "reader0002@example.com" and "MessageRejected" in report.failures[0][1]
    assert per_reader(fake_ses) == {r: 1 for r in readers if r != "reader0002@example.com"}
    shown = cli("sends", "show", SLUG)
    assert "failed: reader0002@example.com: SES: MessageRejected" in shown.output


@pytest.mark.usefixtures("backend_project")  # on both engines
def test_fatal_error_stops_and_a_later_run_resumes(project, fake_ses):
    readers = add_readers(20)
    fake_ses.configure(pause_after=8)
    report = run_job(concurrency=2)
    assert report.exit_code == 2 and "AccountSendingPausedException" in report.stopped
    counts = ledger_counts()
    assert counts["sent"] == 8 and "sending" not in counts and counts["pending"] == 12
    with Ledger.open(load_config()) as ledger:
        assert ledger.find_send(SLUG).last_error
    fake_ses.configure(pause_after=None)
    again = run_job()
    assert again.exit_code == 0 and again.progress.sent == 12
    assert per_reader(fake_ses) == {r: 1 for r in readers}


def test_retries_are_bounded(project, fake_ses):
    add_readers(2)
    fake_ses.configure(queue=["5xx", "503"] * 10)
    report = run_job(max_attempts=3, concurrency=1)
    assert report.exit_code == 2 and "gave up after 3 attempts" in report.stopped
    assert ledger_counts() == {"pending": 2}


def test_throttling_is_back_pressure_not_failure(project, fake_ses):
    """30% of calls throttled at random: the rate is lowered, every throttled message is retried
    (no attempt limit), the send finishes: exit 0, everyone exactly once, nobody failed."""
    readers = add_readers(300)
    fake_ses.configure(throttle_percent=30, seed=9, max_send_rate=400.0)
    report = run_job(concurrency=8, max_attempts=2)  # 2 attempts would not survive 30% throttling
    assert report.exit_code == 0, report.stopped
    assert report.progress.sent == 300 and report.progress.failed == 0
    assert report.progress.throttled == fake_ses.faults_answered["throttle"] > 60
    assert report.rate_decreases > 0 and report.lowest_rate < report.asked_rate == 400.0
    assert per_reader(fake_ses) == {r: 1 for r in readers}
    assert ledger_counts() == {"sent": 300}


def test_throttled_send_through_the_cli_exits_0_and_reports_the_rate(project, edition, fake_ses, cli):
    readers = add_readers(60)
    fake_ses.configure(throttle_percent=30, seed=4, max_send_rate=100.0)
    result = cli("send", EDITION, "--list", "daily", "--transport", "ses", "--yes")
    assert result.exit_code == 0, result.output
    assert f"sent 60, failed 0" in result.output
    line = next(l for l in result.output.splitlines() if l.startswith("throttled "))
    assert "each retried (none counted as failures)" in line and "/s (100/s asked)" in line
    assert per_reader(fake_ses) == {r: 1 for r in readers}


def test_pacing_settles_under_the_providers_real_capacity(project, fake_ses):
    """The account says 200/s, SES really takes 40/s: the rate comes down to about that (AIMD),
    most calls go through, and the send finishes."""
    readers = add_readers(240)
    fake_ses.configure(capacity=40, max_send_rate=200.0)
    started = time.monotonic()
    report = run_job(concurrency=8)
    elapsed = time.monotonic() - started
    assert report.exit_code == 0 and per_reader(fake_ses) == {r: 1 for r in readers}
    assert report.progress.rate < 60  # about the capacity, far from the 200 asked
    assert report.progress.throttled < 2 * 240  # not a storm: the rate came down within seconds
    assert report.rate_decreases >= 2 and report.lowest_rate < 60
    assert elapsed > 240 / 60


def test_endless_throttling_stops_clearly_after_the_patience(project, fake_ses, cli):
    add_readers(3)
    fake_ses.configure(throttle_percent=100)
    report = run_job(concurrency=2, throttle_patience=1.5)
    assert report.exit_code == 2
    assert "throttled for" in report.stopped and "with no message accepted" in report.stopped
    assert "lower --rate" in report.stopped and "run the same command again" in report.stopped
    assert report.progress.failed == 0 and ledger_counts() == {"pending": 3}


def test_quota_smaller_than_the_send_is_refused_before_it_starts(project, edition, fake_ses, cli):
    add_readers(5)
    fake_ses.configure(max_24h=10, sent_24h=7)
    result = cli("send", EDITION, "--list", "daily", "--transport", "ses", "--yes")
    assert result.exit_code == 2
    assert "needs 5 messages but only 3 of the 24-hour sending quota are left" in result.output
    assert fake_ses.messages == [] and ledger_counts() == {}


def test_pacing_follows_the_account_max_rate(project, fake_ses):
    add_readers(12)
    fake_ses.configure(max_send_rate=20.0)
    started = time.monotonic()
    report = run_job(concurrency=8)
    elapsed = time.monotonic() - started
    assert report.progress.sent == 12
    assert elapsed >= 11 / 20.0 * 0.95  # 12 sends at 20/s: 11 intervals at least


def test_test_send_uses_the_transport_without_the_ledger(project, fake_ses):
    add_readers(2)
    job = SendJob(load_config(), small_edition(), "daily", SendOptions(transport="ses"))
    try:
        report = send_test(job, ["reader0001@example.com", "editor@example.com"])
    finally:
        job.close()
    assert report.progress.sent == 2
    assert per_reader(fake_ses) == {"reader0001@example.com": 1, "editor@example.com": 1}
    assert all("Subject: [TEST] Subject" in m["raw"] for m in fake_ses.messages)
    first = email.message_from_string(fake_ses.messages[0]["raw"], policy=policy.default)
    assert "Hi Reader 1" in first.get_body(("plain",)).get_content()  # a subscriber's own name
    assert ledger_counts() == {}


# -- processes: SIGKILL, two at once, Ctrl-C ---------------------------------------------------------------

def spawn_send(project: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "newsletter", "send", EDITION, "--list", "daily",
                             "--transport", "ses", "--yes", *extra], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"send exited early ({proc.returncode}): {proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting: {proc.communicate()[0]}")
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.usefixtures("backend_project")  # on both engines
def test_sigkill_then_resume_delivers_exactly_once_apart_from_unknowns(project, edition, fake_ses, cli):
    readers = add_readers(80)
    fake_ses.configure(latency=0.02)
    proc = spawn_send(project, "--rate", "40", "--concurrency", "4")
    wait_for(lambda: fake_ses.accepted >= 20, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    counts = ledger_counts()
    print("ledger after SIGKILL:", counts)
    assert counts.get("sending", 0) <= 16  # at most the in-flight window (4 × concurrency)
    result = cli("send", EDITION, "--list", "daily", "--transport", "ses", "--yes")
    with Ledger.open(load_config()) as ledger:
        send = ledger.find_send(SLUG)
        unknown = {r["email"] for r in ledger.deliveries(send.id, states=["sending"], limit=1000)}
    assert len(unknown) == counts.get("sending", 0)
    assert result.exit_code == (1 if unknown else 0), result.output
    if unknown:
        assert f"{len(unknown)} message(s) unknown" in result.output
    got = per_reader(fake_ses)
    for reader in readers:
        if reader in unknown:
            assert got[reader] <= 1  # may or may not have left before the kill
        else:
            assert got[reader] == 1, reader
    retry = cli("send", EDITION, "--list", "daily", "--transport", "ses", "--yes", "--retry-unknown")
    assert retry.exit_code == 0, retry.output
    got = per_reader(fake_ses)
    assert all(got[r] >= 1 for r in readers) and ledger_counts() == {"sent": 80}
    assert sum(got.values()) - len(readers) <= len(unknown)  # duplicates only among the unknowns


@pytest.mark.usefixtures("backend_project")  # on both engines
def test_a_second_run_while_another_process_holds_the_rest_says_so(project, edition, fake_ses, cli):
    """Nothing pending but messages in flight in a live process: not 'every reader has been
    dealt with' (they have not), but who holds them; exit 0, nothing sent twice."""
    readers = add_readers(10)
    fake_ses.configure(latency=1.5)
    first = spawn_send(project, "--concurrency", "16")  # claims all ten at once
    wait_for(lambda: ledger_counts().get("sending", 0) == 10, first)
    second = cli("send", EDITION, "--list", "daily", "--transport", "ses", "--yes")
    assert second.exit_code == 0, second.output
    assert "10 message(s) of 2025-10-14 are being sent by another process right now" in second.output
    assert "has been dealt with" not in second.output
    assert first.wait(timeout=60) == 0
    assert per_reader(fake_ses) == {r: 1 for r in readers}


@pytest.mark.slow
@pytest.mark.usefixtures("backend_project")  # on both engines
def test_two_processes_share_the_work_and_never_double_send(project, edition, fake_ses):
    readers = add_readers(300)
    fake_ses.configure(latency=0.1)  # ~7.5 s of work for one process, until the second has joined
    first = spawn_send(project, "--concurrency", "4")
    # The second starts once the first is sending (two cold starts racing made it flaky on a busy
    # machine: one could finish everything before the other had planned), and the answers speed
    # up only once it has joined the send (its cold start on a loaded machine outlasted ~1.5 s).
    wait_for(lambda: ledger_counts().get("sent", 0) > 0, first)
    second = spawn_send(project, "--concurrency", "4")
    wait_for(lambda: live_workers() >= 2, second)
    fake_ses.configure(latency=0.01)
    outputs = [p.communicate(timeout=120)[0] for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    assert per_reader(fake_ses) == {r: 1 for r in readers}
    sent = [int(o.split(f"{SLUG}: sent ")[1].split(",")[0]) for o in outputs]
    assert sum(sent) == 300 and all(sent), outputs
    assert ledger_counts() == {"sent": 300}


@pytest.mark.slow
@pytest.mark.usefixtures("backend_project")  # on both engines
def test_ctrl_c_stops_cleanly_and_resumes(project, edition, fake_ses, cli):
    readers = add_readers(60)
    fake_ses.configure(latency=0.02)
    proc = spawn_send(project, "--rate", "30", "--concurrency", "4")
    wait_for(lambda: fake_ses.accepted >= 10, proc)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 130, output
    assert "interrupted" in output and "Traceback" not in output
    counts = ledger_counts()
    assert "sending" not in counts  # in-flight messages finished and were recorded
    assert counts["sent"] == fake_ses.accepted
    result = cli("send", EDITION, "--list", "daily", "--transport", "ses", "--yes")
    assert result.exit_code == 0, result.output
    assert per_reader(fake_ses) == {r: 1 for r in readers}


@pytest.mark.usefixtures("backend_project")  # on both engines
def test_empty_list_sends_nothing(project, edition, cli):
    add_readers(0)
    result = cli("send", EDITION, "--list", "daily", "--yes")
    assert result.exit_code == 0
    assert "list daily has no active readers: nothing to send" in result.output
    assert ledger_counts() == {}


def test_fatal_stop_through_the_cli_exits_2_and_says_what_to_do(project, edition, fake_ses, cli):
    readers = add_readers(6)
    fake_ses.configure(pause_after=2)
    result = cli("send", EDITION, "--list", "daily", "--transport", "ses", "--yes", "--concurrency", "1")
    assert result.exit_code == 2, result.output
    assert "AccountSendingPausedException" in result.output and "run the same command again" in result.output
    shown = cli("sends", "show", SLUG)
    assert "stopped (resumable)" in shown.output and "last error:" in shown.output
    fake_ses.configure(pause_after=None)
    resumed = cli("send", EDITION, "--list", "daily", "--transport", "ses", "--yes")
    assert resumed.exit_code == 0, resumed.output
    assert per_reader(fake_ses) == {r: 1 for r in readers}
    assert "finished" in cli("sends", "show", SLUG).output


def test_send_through_smtp(project, edition, cli, smtp_server):
    controller, handler = smtp_server
    with open(project / "newsletter.toml", "a", encoding="utf-8") as fh:
        fh.write(f'\n[smtp]\nhost = "127.0.0.1"\nport = {controller.port}\nsecurity = "none"\n')
    readers = add_readers(4)
    result = cli("send", EDITION, "--list", "daily", "--transport", "smtp", "--yes")
    assert result.exit_code == 0, result.output
    assert sorted(r for e in handler.envelopes for r in e.rcpt_tos) == readers
    with Ledger.open(load_config()) as ledger:
        ids = sorted(r["provider_message_id"] for r in ledger.deliveries(ledger.find_send(SLUG).id))
    assert ids == ["Q1", "Q2", "Q3", "Q4"]  # from the server's "queued as" replies


def test_quota_unreadable_for_iam_reasons_warns_and_sends(project, edition, fake_ses, cli):
    readers = add_readers(3)
    fake_ses.configure(quota_denied=True)
    result = cli("send", EDITION, "--list", "daily", "--transport", "ses", "--yes", "--rate", "50")
    assert result.exit_code == 0, result.output
    assert "warning: cannot read the sending quota" in result.output and "pacing:     50 messages/s" in result.output
    assert per_reader(fake_ses) == {r: 1 for r in readers}


def test_bad_credentials_stop_before_anything_is_written(project, edition, fake_ses, cli, monkeypatch):
    add_readers(2)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup either
    result = cli("send", EDITION, "--list", "daily", "--transport", "ses", "--yes")
    assert result.exit_code == 2
    assert "no usable AWS credentials" in result.output and "Traceback" not in result.output
    assert ledger_counts() == {}


@pytest.mark.slow
@pytest.mark.usefixtures("backend_project")  # on both engines
def test_a_paused_sender_is_not_dead_and_retry_unknown_leaves_its_messages_alone(project, edition, fake_ses):
    """SIGSTOP a real send past the stale time, then `--retry-unknown` in another process: the
    paused worker still holds its claims (same host, same pid, same start time), so nothing of
    it is re-sent; resumed, it records them. Every reader exactly once."""
    readers = add_readers(120)
    fake_ses.configure(latency=0.02)
    env = dict(os.environ, PYTHONUNBUFFERED="1", NEWSLETTER_STALE_AFTER="1")
    command = [sys.executable, "-m", "newsletter", "send", EDITION, "--list", "daily", "--transport", "ses", "--yes"]
    paused = subprocess.Popen(command + ["--rate", "40", "--concurrency", "4"], cwd=project, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: fake_ses.accepted >= 20, paused)
        paused.send_signal(signal.SIGSTOP)
        time.sleep(3.0)  # three times the stale time without a heartbeat
        with Ledger.open(load_config()) as ledger:
            send = ledger.find_send(SLUG)
            held = {r["email"] for r in ledger.deliveries(send.id, states=["sending"], limit=1000)}
            assert ledger.unknown(send.id) == 0
        assert held, "the paused worker should hold some claims"
        other = subprocess.run(command + ["--retry-unknown", "--concurrency", "4"], cwd=project, env=env,
                               capture_output=True, text=True, timeout=120)
        assert other.returncode == 0, other.stdout + other.stderr
        assert "unknown" not in other.stdout + other.stderr
        got = per_reader(fake_ses)
        assert all(got[r] <= 1 for r in readers), {r: n for r, n in got.items() if n > 1}
        with Ledger.open(load_config()) as ledger:  # still held by the paused worker, untouched
            assert {r["email"] for r in ledger.deliveries(send.id, states=["sending"], limit=1000)} == held
    finally:
        paused.send_signal(signal.SIGCONT)
    output = paused.communicate(timeout=60)[0]
    assert paused.returncode == 0, output
    assert per_reader(fake_ses) == {r: 1 for r in readers}
    assert ledger_counts() == {"sent": 120}


def test_adaptive_rate_decreases_multiplicatively_and_increases_additively():
    from newsletter.send.pacing import AdaptiveRate

    now = [0.0]
    bucket = AdaptiveRate(100.0, clock=lambda: now[0])
    assert bucket.throttled() and bucket.rate == 50.0  # all of the round throttled: halved
    assert not bucket.throttled() and bucket.rate == 50.0  # same round: no second decrease
    for _ in range(50):  # ~1 s of successes at 50/s: +step (100/20 = 5) messages/s
        bucket.succeeded()
    assert 54.5 < bucket.rate < 55.5
    now[0] = 1.5
    for _ in range(8):
        bucket.succeeded()
    assert bucket.throttled()  # a new round: 1 throttled of 59 answered in the last one
    assert 54.5 < bucket.rate < 56 and bucket.decreases == 2
    for _ in range(100000):
        bucket.succeeded()
    assert bucket.rate == 100.0  # never above the ceiling
    for second in range(2, 40):
        now[0] = second
        bucket.throttled()
    assert bucket.rate == 0.2 and bucket.lowest == 0.2  # never below the floor

    unpaced = AdaptiveRate(None, clock=lambda: now[0])
    now[0] = 100.0
    for _ in range(30):
        assert unpaced.reserve() == 0.0
    assert unpaced.throttled() and unpaced.ceiling == 30.0 and unpaced.rate == 15.0
