"""``send --workers N``: N sending processes on this machine share one send through the ledger.

The parent (the ``send`` command) checks, plans and asks once, then ``start_send`` freezes the
snapshot and the recipients (or finds the send it resumes), and ``run_workers`` starts N worker
processes (``python -m newsletter.send.worker``, each with its own transport client, sending
threads and ledger connection) that join that send by its id. They claim deliveries atomically
from the ledger, as two ``send`` commands in two terminals do, and share the rate asked (each
takes 1/N of it, N counted from ``send_workers``; see ``SendJob._rebalance``). The parent shows
progress for the whole send from the ledger, and its summary and exit code are those of one
process sending the whole send.

Ctrl-C reaches only the parent (the workers run in their own session); it asks each worker to
stop (SIGTERM): they stop claiming, let their in-flight messages finish, record them and exit —
the send is resumable as after any Ctrl-C. A worker that dies (kill -9) is told; the others finish
the send, and what it held is *unknown* as for any process that died (``--retry-unknown``). A
worker that stops on a fatal error (sending paused, retries exhausted) stops the others too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from newsletter.send.interrupts import ctrl_c_stops
from newsletter.send.job import PROGRESS_EVERY, ProgressInfo, SendJob, SendPlan, SendReport

STOP_SIGNAL = signal.SIGTERM


@dataclass
class _Worker:
    number: int
    proc: subprocess.Popen
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    asked_to_stop: bool = False
    told: bool = False  # its end was reported

    def report(self) -> dict | None:
        for line in reversed(self.out):
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except ValueError:
                    return None
        return None


def worker_command() -> list[str]:
    return [sys.executable, "-m", "newsletter.send.worker"]


def run_workers(job: SendJob, plan: SendPlan, workers: int, *,
                progress: Callable[[ProgressInfo], None] | None = None,
                notify: Callable[[str], None] | None = None) -> SendReport:
    """Send ``job``'s send with ``workers`` processes; block until they are done. Raises
    ``KeyboardInterrupt`` after a clean stop on Ctrl-C (the report is on ``job.report``)."""
    notify = notify or (lambda line: print(line, file=sys.stderr))
    send = job.start_send()
    ledger = job.ledger
    before = ledger.progress(send.id)
    info = ProgressInfo(total=before.pending)
    job.report = report = SendReport(slug=send.ref, progress=info, asked_rate=plan.rate)
    spec = json.dumps({
        "config": str(job.config.file) if job.config.file else None, "root": str(job.config.root),
        "send_id": send.id, "parent": os.getpid(),
        "options": {**asdict(job.options), "transport": job.transport_name, "retry_unknown": False},
    })
    shown: set[str] = set()
    lock = threading.Lock()

    def forward(line: str) -> None:  # the workers' own lines (warnings, errors), each said once
        with lock:
            if line and line not in shown:
                shown.add(line)
                notify(line)

    started = time.monotonic()
    pool: list[_Worker] = []
    interrupted = False
    # Ctrl-C is taken between two rounds of the loop, never in the middle of a ledger read
    with ctrl_c_stops(threading.Event()) as ctrl_c:
        try:
            for number in range(1, workers + 1):
                pool.append(_spawn(number, spec, forward))
            last = 0.0
            while True:
                ctrl_c.raise_if_pressed()
                running = [w for w in pool if w.proc.poll() is None]
                for w in pool:
                    if w.proc.returncode is not None and not w.told:
                        _ended(w, pool, workers, report, notify)
                now = time.monotonic()
                if progress and now - last >= PROGRESS_EVERY:
                    _count(ledger, send.id, before, info)
                    info.elapsed = now - started
                    progress(info)
                    last = now
                if not running:
                    break
                time.sleep(0.05)
        except KeyboardInterrupt:
            interrupted = True
            for w in pool:
                _ask_to_stop(w)
            _wait_all(pool)  # they finish their in-flight messages and record them
        finally:
            if not interrupted and any(w.proc.poll() is None for w in pool):  # an error here: stop them
                for w in pool:
                    _ask_to_stop(w)
                _wait_all(pool)
            for w in pool:
                for thread in w.threads:
                    thread.join(5)
            info.elapsed = time.monotonic() - started
            _finish(job, send.id, before, pool, report, interrupted)
            if progress:
                progress(info)
    if interrupted:
        raise KeyboardInterrupt
    return report


def _spawn(number: int, spec: str, forward: Callable[[str], None]) -> _Worker:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(worker_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, encoding="utf-8", errors="replace", env=env,
                            start_new_session=True)  # Ctrl-C at the terminal reaches the parent only
    worker = _Worker(number, proc)

    def read(stream, into: list[str], echo: bool) -> None:
        for line in stream:
            line = line.rstrip("\n")
            into.append(line)
            if echo:
                forward(line)

    worker.threads = [threading.Thread(target=read, args=(proc.stdout, worker.out, False), daemon=True),
                      threading.Thread(target=read, args=(proc.stderr, worker.err, True), daemon=True)]
    for thread in worker.threads:
        thread.start()
    proc.stdin.write(spec)  # type: ignore[union-attr]
    proc.stdin.close()  # type: ignore[union-attr]
    return worker


def _ask_to_stop(worker: _Worker) -> None:
    if worker.proc.poll() is None and not worker.asked_to_stop:
        worker.asked_to_stop = True
        try:
            worker.proc.send_signal(STOP_SIGNAL)
        except ProcessLookupError:
            pass


def _wait_all(pool: list[_Worker]) -> None:
    for w in pool:
        while True:
            try:
                w.proc.wait()
                break
            except KeyboardInterrupt:  # a second Ctrl-C: they are stopping already
                continue


def _ended(worker: _Worker, pool: list[_Worker], workers: int, report: SendReport,
           notify: Callable[[str], None]) -> None:
    """A worker exited while the send goes on: tell a death; a fatal stop stops the others."""
    worker.told = True
    code = worker.proc.returncode
    for thread in worker.threads:
        thread.join(5)
    result = worker.report()
    if result is None:
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        others = [w for w in pool if w.proc.poll() is None]
        notify(f"worker {worker.number} of {workers} (pid {worker.proc.pid}) died ({how})"
               + ("; the others go on" if others else ""))
        return
    if result.get("stopped"):
        for other in pool:
            _ask_to_stop(other)


def _count(ledger, send_id: int, before, info: ProgressInfo) -> None:
    now = ledger.progress(send_id)
    info.sent = now.sent - before.sent
    info.failed = now.failed - before.failed
    info.skipped = now.skipped - before.skipped


def _finish(job: SendJob, send_id: int, before, pool: list[_Worker], report: SendReport, interrupted: bool) -> None:
    """The whole send's report: counts from the ledger, the rest summed over the workers."""
    info = report.progress
    _count(job.ledger, send_id, before, info)
    report.interrupted = interrupted
    lowest: list[float] = []
    for w in pool:
        result = w.report()
        if result is None:  # it died, or could not start: its own line was shown
            continue
        info.retries += result["retries"]
        info.throttled += result["throttled"]
        report.released += result["released"]
        report.rate_decreases += result["rate_decreases"]
        if result.get("lowest_rate") is not None and result["rate_decreases"]:
            lowest.append(result["lowest_rate"])
        for failure in result["failures"]:
            if len(report.failures) < 20:
                report.failures.append(tuple(failure))  # type: ignore[arg-type]
        if result.get("stopped") and report.stopped is None:
            report.stopped = result["stopped"]
    report.lowest_rate = min(lowest) if lowest else None
    report.finished = job.ledger.finish_if_done(send_id)
    if not interrupted and not report.finished and report.stopped is None and all(w.report() is None for w in pool):
        last = next((line for w in pool for line in reversed(w.err) if line.strip()), "")
        report.stopped = (f"every worker stopped before the send was done ({last.removeprefix('error: ')}); "
                          "run the same command again to resume") if last else \
            "every worker died before the send was done: run the same command again to resume"
    report.unknown = job.ledger.unknown(send_id)
    job.ledger.set_last_error(send_id, report.stopped if not report.finished else None)


def report_json(report: SendReport) -> str:
    """A worker's report, as its last line on stdout."""
    p = report.progress
    return json.dumps({"sent": p.sent, "failed": p.failed, "skipped": p.skipped, "retries": p.retries,
                       "throttled": p.throttled, "elapsed": p.elapsed, "released": report.released,
                       "stopped": report.stopped, "interrupted": report.interrupted, "finished": report.finished,
                       "unknown": report.unknown, "failures": report.failures[:20],
                       "lowest_rate": report.lowest_rate, "rate_decreases": report.rate_decreases},
                      ensure_ascii=False)
