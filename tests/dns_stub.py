"""A tiny authoritative DNS server on 127.0.0.1 for the tests (UDP, dnspython's wire format):
``DnsStub({("_dmarc.example.com", "TXT"): ['"v=DMARC1; p=none"']})``; a name it has no record
of is NXDOMAIN, a known name without that type an empty answer. Started and stopped by the test."""

from __future__ import annotations

import socket
import threading


class DnsStub:
    def __init__(self, records: dict[tuple[str, str], list[str]]):
        self.records = {(name.lower().rstrip("."), rdtype.upper()): values for (name, rdtype), values in records.items()}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.queries: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "DnsStub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        import dns.flags
        import dns.message
        import dns.rcode
        import dns.rdatatype
        import dns.rrset

        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except (socket.timeout, OSError):
                continue
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA
            for question in query.question:
                name = question.name.to_text().lower().rstrip(".")
                rdtype = dns.rdatatype.to_text(question.rdtype)
                self.queries.append((name, rdtype))
                values = self.records.get((name, rdtype))
                if values:
                    response.answer.append(dns.rrset.from_text_list(question.name, 300, "IN", rdtype, values))
                elif not any(n == name for n, _ in self.records):
                    response.set_rcode(dns.rcode.NXDOMAIN)
            try:
                self.sock.sendto(response.to_wire(), peer)
            except OSError:
                pass
