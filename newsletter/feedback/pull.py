"""``events pull``: read SES notifications from the SQS queue, record them, then delete them.

A queue message is deleted only after everything it carried is committed (or kept aside), so a
crash, a kill or Ctrl-C at any point loses nothing: the message comes back after the queue's
visibility timeout and is recognised as a duplicate. Long polling (``WaitTimeSeconds``) keeps an
idle ``--watch`` loop at one cheap request per 20 s.

Test hook (documented in the tests and the README): with ``NEWSLETTER_EVENTS_DIE_AFTER_COMMIT=N``
in the environment the process dies with ``os._exit(86)`` right after committing the N-th queue
message and before deleting it — the worst moment for a crash, which the tests reproduce.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from newsletter.aws import aws_client, error_code, is_retryable
from newsletter.config import Config
from newsletter.errors import ConfigError, TransportError
from newsletter.feedback.record import EventRecorder, Outcome
from newsletter.feedback.parse import Ignored, MalformedMessage, parse_message

WATCH_WAIT_SECONDS = 20  # the longest long poll SQS allows
DRAIN_WAIT_SECONDS = 2  # one-shot: still a long poll (asks every SQS server), but ends promptly
DIE_AFTER_COMMIT_ENV = "NEWSLETTER_EVENTS_DIE_AFTER_COMMIT"
_MAX_BACKOFF = 60

Report = Callable[[str, str], None]  # (level: "effect" | "info" | "warning", one-line message)


@dataclass
class PullSummary:
    messages: int = 0
    recorded: int = 0
    duplicates: int = 0
    ignored: int = 0
    kept_aside: int = 0
    by_type: Counter = field(default_factory=Counter)

    def line(self) -> str:
        kinds = ", ".join(f"{n} {t}" for t, n in sorted(self.by_type.items()))
        return (f"{self.messages} queue messages: {self.recorded} events recorded"
                + (f" ({kinds})" if kinds else "")
                + f", {self.duplicates} duplicates, {self.ignored} ignored, {self.kept_aside} kept aside")


def _quiet(level: str, message: str) -> None:
    return None


class _CrashHook:
    """Dies right after the N-th commit when the test environment asks for it."""

    def __init__(self) -> None:
        value = os.environ.get(DIE_AFTER_COMMIT_ENV, "").strip()
        self.remaining = int(value) if value.isdigit() and int(value) > 0 else 0

    def committed(self) -> None:
        if self.remaining:
            self.remaining -= 1
            if self.remaining == 0:
                os._exit(86)


def pull_events(config: Config, recorder: EventRecorder, *, watch: bool = False,
                wait_seconds: int | None = None, report: Report = _quiet,
                stop: Callable[[], bool] = lambda: False, sqs=None,
                summary: PullSummary | None = None) -> PullSummary:
    """Drain the queue once (or, with ``watch``, until interrupted or ``stop()``).

    Raises ``ConfigError`` (no queue configured, no credentials, no such queue) and
    ``TransportError`` (the queue cannot be reached; with ``watch`` only after backing off
    on network trouble did not help). KeyboardInterrupt passes through, state consistent;
    pass ``summary`` to keep the counts of an interrupted run.
    """
    queue_url = config.ses.queue_url.strip()
    if not queue_url:
        raise ConfigError("ses.queue_url is not set: name the SQS queue that receives SES notifications",
                          file=config.file)
    sqs = sqs or aws_client(config, "sqs")
    wait = wait_seconds if wait_seconds is not None else (WATCH_WAIT_SECONDS if watch else DRAIN_WAIT_SECONDS)
    summary = summary if summary is not None else PullSummary()
    hook, failures = _CrashHook(), 0
    while not stop():
        try:
            messages = _receive(sqs, queue_url, wait)
            failures = 0
        except TransportError as err:
            if not (watch and err.kind == TransportError.RETRYABLE):
                raise
            failures += 1
            delay = min(_MAX_BACKOFF, 2 ** failures)
            report("warning", f"{err}; retrying in {delay} s")
            time.sleep(delay)
            continue
        if not messages and not watch:
            break
        _process_batch(sqs, queue_url, recorder, messages, summary, hook, report)
    return summary


def _receive(sqs, queue_url: str, wait: int) -> list[dict]:
    try:
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait)
    except Exception as err:  # botocore's errors have no common base worth naming here
        raise _queue_error(err, queue_url) from None
    return answer.get("Messages", [])


def _process_batch(sqs, queue_url: str, recorder: EventRecorder, messages: list[dict],
                   summary: PullSummary, hook: _CrashHook, report: Report) -> None:
    done: list[dict] = []
    try:
        for message in messages:
            _handle(recorder, message, summary, report)
            hook.committed()
            done.append(message)
    finally:
        # Whatever is committed goes, even when a later message of the batch failed.
        _delete(sqs, queue_url, done, report)


def _handle(recorder: EventRecorder, message: dict, summary: PullSummary, report: Report) -> None:
    summary.messages += 1
    body, message_id = message.get("Body", ""), message.get("MessageId", "")
    try:
        parsed = parse_message(body)
    except MalformedMessage as err:
        if recorder.keep_aside(message_id, body, str(err)):
            summary.kept_aside += 1
            report("warning", f"kept message {message_id} aside: {err}")
        else:
            summary.duplicates += 1
        return
    if isinstance(parsed, Ignored):
        summary.ignored += 1
        report("info", f"ignored message {message_id}: {parsed.reason}")
        return
    for event in parsed:
        result = recorder.record(event)
        if result.outcome is Outcome.DUPLICATE:
            summary.duplicates += 1
            continue
        summary.recorded += 1
        summary.by_type[event.type.value] += 1
        if result.effect:
            report("effect", result.effect)


def _delete(sqs, queue_url: str, messages: list[dict], report: Report) -> None:
    if not messages:
        return
    entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)]
    try:
        answer = sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
    except Exception as err:
        # Recorded already: the messages will come back and be recognised as duplicates.
        report("warning", f"could not delete {len(entries)} queue messages ({error_code(err)}); "
                          "they will be seen again and skipped")
        return
    for failed in answer.get("Failed", []):
        report("warning", f"could not delete a queue message ({failed.get('Code')}); it will be skipped next time")


def _queue_error(err: Exception, queue_url: str) -> Exception:
    from botocore.exceptions import NoCredentialsError, NoRegionError, PartialCredentialsError

    if isinstance(err, (NoCredentialsError, PartialCredentialsError)):
        return ConfigError("no AWS credentials: set them up for boto3 (environment, ~/.aws, or an "
                           "instance role), or set ses.profile")
    if isinstance(err, NoRegionError):
        return ConfigError("no AWS region: set ses.region")
    code = error_code(err)
    if "NonExistentQueue" in code or code == "QueueDoesNotExist":
        return ConfigError(f"no such SQS queue: {queue_url} (check ses.queue_url and ses.region)")
    kind = TransportError.RETRYABLE if is_retryable(err) else TransportError.FATAL
    return TransportError(f"cannot read the SQS queue {queue_url}: {code}: {err}", kind=kind, code=code,
                          response=getattr(err, "response", None))
