"""A local SES-compatible HTTP endpoint whose answers the tests control.

It speaks the two calls the SES transport makes, in the wire formats boto3 expects:
SES v2 ``SendEmail`` (``POST /v2/email/outbound-emails``, JSON; errors with ``x-amzn-ErrorType``)
and SES v1 ``GetSendQuota`` (``POST /`` query protocol, XML). Faults on demand, through
``POST /_fake/faults``:

    {"queue": ["throttle", "5xx", "ok", "paused", "reject", "quota"]}   answers for the next calls
    {"reject": ["bad@example.com"]}    MessageRejected for these recipients, every time
    {"pause_after": 5}                 AccountSendingPausedException once 5 messages were accepted
    {"throttle_every": 3}              TooManyRequestsException for every 3rd call
    {"throttle_percent": 30, "seed": 1}  TooManyRequestsException for a random 30% of calls
    {"capacity": 50}                   TooManyRequestsException for calls beyond 50 in any second
                                       (what real SES does above the account's rate)
    {"latency": 0.01}                  seconds to wait before answering a send

``POST /_fake/config`` sets ``max_send_rate``/``max_24h``/``sent_24h``, ``quota_denied`` (GetSendQuota
answers AccessDenied, as for an IAM policy that allows only sending) and ``mode``: ``record``
(keeps each accepted message's recipients and raw bytes) or ``null`` (answers success at once,
keeps nothing — the benchmark's endpoint); ``keep_raw`` false keeps recipients but not the bytes;
``keep_request`` true also keeps each accepted call's HTTP request (``request``: method, path,
headers with lower-case names, body), so that tests can check its signature. Two more faults:
``drop`` closes the connection without an answer, ``garbage`` answers 200 with a page that is not
SES's. ``GET /_fake/messages`` lists what was accepted;
``POST /_fake/reset`` forgets everything.

Run in a thread (``FakeSes().start()``) or as a process: ``python tests/fake_ses.py --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import threading
import time
import uuid
from urllib.parse import parse_qs

_XMLNS = "http://ses.amazonaws.com/doc/2010-12-01/"
_ERRORS = {  # fault name -> (HTTP status, error code, message)
    "throttle": (429, "TooManyRequestsException", "Maximum sending rate exceeded."),
    "5xx": (500, "InternalFailure", "An internal error occurred."),
    "503": (503, "ServiceUnavailable", "Service unavailable."),
    "reject": (400, "MessageRejected", "Email address is on the suppression list."),
    "paused": (400, "AccountSendingPausedException", "Sending is paused for this account."),
    "quota": (400, "LimitExceededException", "Daily message quota exceeded."),
    "unverified": (400, "MessageRejected", "Email address is not verified. The following identities failed "
                                           "the check: Did not have authority to send from email news@example.com"),
    "credentials": (403, "UnrecognizedClientException", "The security token included in the request is invalid."),
}


class FakeSes:
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host, self.port = host, port
        self.lock = threading.Lock()
        self.reset()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None

    # -- state ---------------------------------------------------------------------------------
    def reset(self) -> None:
        with getattr(self, "lock", threading.Lock()):
            self.mode = "record"
            self.max_send_rate, self.max_24h, self.sent_24h = 1000.0, 1_000_000, 0
            self.queue: list[str] = []
            self.reject: set[str] = set()
            self.pause_after: int | None = None
            self.throttle_every = 0
            self.throttle_percent = 0.0
            self.random = random.Random(0)
            self.capacity = 0.0
            self.keep_raw = True
            self.keep_request = False
            self._recent: list[float] = []
            self.latency = 0.0
            self.quota_denied = False
            self.calls = 0
            self.accepted = 0
            self.faults_answered: dict[str, int] = {}
            self.messages: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def configure(self, **values) -> None:
        with self.lock:
            for key in ("mode", "max_send_rate", "max_24h", "sent_24h", "latency", "throttle_every", "pause_after",
                        "quota_denied", "throttle_percent", "capacity", "keep_raw", "keep_request"):
                if key in values:
                    setattr(self, key, values[key])
            if "seed" in values:
                self.random = random.Random(values["seed"])
            if "queue" in values:
                self.queue = list(values["queue"])
            if "reject" in values:
                self.reject = {a.lower() for a in values["reject"]}

    # -- answers -------------------------------------------------------------------------------
    def _fault_for(self, recipients: list[str]) -> str | None:
        with self.lock:
            self.calls += 1
            if self.queue:
                fault = self.queue.pop(0)
                return None if fault == "ok" else fault
            if self.throttle_every and self.calls % self.throttle_every == 0:
                return "throttle"
            if self.throttle_percent and self.random.random() * 100 < self.throttle_percent:
                return "throttle"
            if self.capacity:
                now = time.monotonic()
                self._recent = [t for t in self._recent if now - t < 1.0]
                if len(self._recent) >= self.capacity:
                    return "throttle"
                self._recent.append(now)
            if self.pause_after is not None and self.accepted >= self.pause_after:
                return "paused"
            if any(r.lower() in self.reject for r in recipients):
                return "reject"
            return None

    def send_email(self, body: bytes, request: dict | None = None) -> tuple[int | None, dict, bytes]:
        if self.mode == "null":
            return 200, {"Content-Type": "application/json"}, b'{"MessageId":"null-0"}'
        params = json.loads(body)
        recipients = params.get("Destination", {}).get("ToAddresses", [])
        fault = self._fault_for(recipients)
        if fault in ("drop", "garbage"):
            with self.lock:
                self.faults_answered[fault] = self.faults_answered.get(fault, 0) + 1
            if fault == "drop":  # the connection closes, no answer
                return None, {}, b""
            return 200, {"Content-Type": "text/html"}, b"<html><body>Welcome to the hotel wifi</body></html>"
        if fault:
            status, code, message = _ERRORS[fault]
            with self.lock:
                self.faults_answered[fault] = self.faults_answered.get(fault, 0) + 1
            return status, {"Content-Type": "application/json", "x-amzn-ErrorType": code}, \
                json.dumps({"__type": code, "message": message}).encode()
        message_id = f"fake-{uuid.uuid4()}"
        raw = base64.b64decode(params["Content"]["Raw"]["Data"])
        with self.lock:
            self.accepted += 1
            self.sent_24h += 1
            self.messages.append({"id": message_id, "at": time.time(), "from": params.get("FromEmailAddress"),
                                  "to": recipients,
                                  "tags": params.get("EmailTags", []),
                                  "configuration_set": params.get("ConfigurationSetName"),
                                  "raw": raw.decode("ascii", "replace") if self.keep_raw else "",
                                  "request": dict(request or {}, body=body.decode()) if self.keep_request else None})
        return 200, {"Content-Type": "application/json"}, json.dumps({"MessageId": message_id}).encode()

    def query(self, body: bytes) -> tuple[int, dict, bytes]:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        action = form.get("Action")
        if self.quota_denied:
            return _xml_error(403, "AccessDenied", "User is not authorized to perform ses:GetSendQuota")
        if action != "GetSendQuota":
            return _xml_error(400, "InvalidAction", f"{action} is not supported by the fake")
        xml = (f'<GetSendQuotaResponse xmlns="{_XMLNS}"><GetSendQuotaResult>'
               f"<SentLast24Hours>{float(self.sent_24h)}</SentLast24Hours>"
               f"<Max24HourSend>{float(self.max_24h)}</Max24HourSend>"
               f"<MaxSendRate>{float(self.max_send_rate)}</MaxSendRate>"
               f"</GetSendQuotaResult><ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId>"
               "</ResponseMetadata></GetSendQuotaResponse>")
        return 200, {"Content-Type": "text/xml"}, xml.encode()

    def control(self, method: str, path: str, body: bytes) -> tuple[int, dict, bytes]:
        if path == "/_fake/reset":
            self.reset()
            return _json({})
        if path in ("/_fake/faults", "/_fake/config"):
            self.configure(**json.loads(body or b"{}"))
            return _json({})
        if path == "/_fake/messages":
            with self.lock:
                return _json({"count": len(self.messages), "calls": self.calls, "faults": self.faults_answered,
                              "messages": self.messages})
        return _json({"error": "not found"}, 404)

    async def _answer(self, method: str, path: str, body: bytes,
                      headers: dict | None = None) -> tuple[int | None, dict, bytes]:
        if path.startswith("/_fake/"):
            return self.control(method, path, body)
        if path == "/v2/email/outbound-emails" and method == "POST":
            if self.latency:
                await asyncio.sleep(self.latency)
            return self.send_email(body, {"method": method, "path": path, "headers": headers})
        if path == "/" and method == "POST":
            return self.query(body)
        return _json({"message": f"no route {method} {path}"}, 404)

    # -- HTTP/1.1 with keep-alive ----------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in
                           (line.split(":", 1) for line in lines[1:] if ":" in line)}
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                status, out_headers, payload = await self._answer(method, target.split("?")[0], body, headers)
                if status is None:  # the "drop" fault
                    return
                extra = "".join(f"{k}: {v}\r\n" for k, v in out_headers.items())
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(payload)}\r\n{extra}"
                             f"x-amzn-RequestId: 00000000-0000-0000-0000-000000000000\r\n\r\n".encode() + payload)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            writer.close()

    def start(self) -> "FakeSes":
        """Serve from a daemon thread; returns once the port is bound."""
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)

            async def main() -> None:
                self._server = await asyncio.start_server(self._handle, self.host, self.port, backlog=256, limit=1 << 20)
                self.port = self._server.sockets[0].getsockname()[1]
                ready.set()
                async with self._server:
                    try:
                        await self._server.serve_forever()
                    except asyncio.CancelledError:
                        pass

            self._task = self._loop.create_task(main())
            try:
                self._loop.run_until_complete(self._task)
            except asyncio.CancelledError:
                pass

        self._thread = threading.Thread(target=run, daemon=True, name="fake-ses")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake SES did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        if self._thread is not None:
            self._thread.join(5)

    async def _shutdown(self) -> None:
        """Cancel the open connections' handlers first, then the server task."""
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and t is not self._task]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        self._task.cancel()


def _json(data: dict, status: int = 200) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(data).encode()


def _xml_error(status: int, code: str, message: str) -> tuple[int, dict, bytes]:
    xml = (f'<ErrorResponse xmlns="{_XMLNS}"><Error><Type>Sender</Type><Code>{code}</Code>'
           f"<Message>{message}</Message></Error><RequestId>0</RequestId></ErrorResponse>")
    return status, {"Content-Type": "text/xml"}, xml.encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", default="record", choices=("record", "null"))
    parser.add_argument("--max-send-rate", type=float, default=1000.0)
    args = parser.parse_args()
    fake = FakeSes(args.host, args.port)
    fake.configure(mode=args.mode, max_send_rate=args.max_send_rate)

    async def run() -> None:
        server = await asyncio.start_server(fake._handle, fake.host, fake.port, backlog=256, limit=1 << 20)
        print(server.sockets[0].getsockname()[1], flush=True)  # the port, for whoever started us
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
