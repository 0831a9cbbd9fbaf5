"""DNS lookups for ``doctor`` (DMARC, SPF, DKIM, MX), through dnspython, against a resolver the
user can choose: ``[dns] nameservers = "192.0.2.53, 127.0.0.1:5353"`` in newsletter.toml or env
``NEWSLETTER_DNS_NAMESERVERS`` (which wins); by default the system's resolver; ``off`` for none. dnspython is
imported lazily (it comes with email-validator)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # config imports this module to check [dns] nameservers
    from newsletter.config import Config

NAMESERVERS_ENV = "NEWSLETTER_DNS_NAMESERVERS"
LIFETIME = 3.0  # seconds per lookup, retries included


class LookupFailed(Exception):
    """A lookup with no usable answer. ``kind``: ``missing`` (NXDOMAIN or no record of that type)
    or ``unreachable`` (no resolver answered)."""

    def __init__(self, name: str, kind: str, detail: str):
        super().__init__(f"{name}: {detail}")
        self.name, self.kind, self.detail = name, kind, detail


def configured(config: Config) -> str:
    return os.environ.get(NAMESERVERS_ENV, "").strip() or config.dns.nameservers.strip()


def lookups_off(config: Config) -> bool:
    """``nameservers = "off"``: no DNS lookups at all (an offline machine; the test suite)."""
    return configured(config).lower() == "off"


def nameservers(config: Config) -> list[tuple[str, int]]:
    """The configured resolvers as ``(address, port)``; empty = the system's. A malformed value
    (env or file) is a ``ConfigError`` naming where it came from."""
    from newsletter.errors import ConfigError

    try:
        return parse_nameservers(configured(config))
    except ValueError as err:
        where = NAMESERVERS_ENV if os.environ.get(NAMESERVERS_ENV, "").strip() else "dns.nameservers"
        raise ConfigError(f"{where}: {err}", file=None if where == NAMESERVERS_ENV else config.file) from None


_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def parse_nameservers(value: str) -> list[tuple[str, int]]:
    """``"192.0.2.53, 127.0.0.1:5353, [2001:db8::1]:5353"`` as ``(host, port)`` pairs (pure);
    ``ValueError`` saying which entry is not ``host[:port]``."""
    import ipaddress

    out = []
    if value.strip().lower() == "off":
        return out
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        host, port = item, "53"
        if item.startswith("["):  # [2001:db8::1]:5353
            host, closed, rest = item[1:].partition("]")
            port = "" if not closed else rest[1:] if rest.startswith(":") else ("53" if not rest else "")
        elif item.count(":") == 1:
            host, _, port = item.partition(":")
        try:
            ok_host = bool(_HOST_RE.fullmatch(host)) or ipaddress.ip_address(host) is not None
        except ValueError:
            ok_host = False
        if not ok_host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{item!r} is not a resolver: expected host[:port] like 192.0.2.53 or "
                             "127.0.0.1:5353 (port 1-65535), comma-separated, or \"off\"")
        out.append((host, int(port)))
    return out


@dataclass
class Resolver:
    """Looks names up; ``where`` says which resolver, for the doctor's lines."""

    config: Config

    def __post_init__(self):
        import dns.nameserver
        import dns.resolver

        servers = nameservers(self.config)
        if servers:
            self._resolver = dns.resolver.Resolver(configure=False)
            self._resolver.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in servers]
            self.where = ", ".join(f"{h}:{p}" for h, p in servers)
        else:
            self._resolver = dns.resolver.Resolver()
            self.where = "the system resolver"
        self._resolver.lifetime = LIFETIME
        self._resolver.timeout = LIFETIME / 2

    def _query(self, name: str, rdtype: str):
        import dns.exception
        import dns.resolver

        try:
            return self._resolver.resolve(name, rdtype, raise_on_no_answer=True)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            raise LookupFailed(name, "missing", f"no {rdtype} record") from None
        except (dns.resolver.NoNameservers, dns.resolver.LifetimeTimeout, dns.exception.Timeout) as err:
            raise LookupFailed(name, "unreachable", f"no answer from {self.where} ({type(err).__name__})") from None
        except (dns.exception.DNSException, OSError, ValueError) as err:
            raise LookupFailed(name, "unreachable", f"lookup failed via {self.where}: {err}") from None

    def txt(self, name: str) -> list[str]:
        answer = self._query(name, "TXT")
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]

    def mx(self, name: str) -> list[str]:
        return [str(r.exchange).rstrip(".").lower() for r in self._query(name, "MX")]

    def cname(self, name: str) -> str:
        return str(self._query(name, "CNAME")[0].target).rstrip(".").lower()


def org_domain(domain: str) -> str:
    """The organisational domain DMARC falls back to, approximated as the last two labels (three
    under a two-letter country code's second level such as .co.uk / .com.cn)."""
    labels = domain.lower().rstrip(".").split(".")
    if len(labels) > 2 and len(labels[-1]) == 2 and labels[-2] in ("co", "com", "net", "org", "ac", "gov", "edu"):
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def dmarc_record(resolver: Resolver, domain: str) -> tuple[str, str]:
    """``(where, record)`` of the DMARC policy covering ``domain`` (its own, else the
    organisational domain's). ``LookupFailed`` when there is none."""
    names = [f"_dmarc.{domain}"]
    if org_domain(domain) != domain:
        names.append(f"_dmarc.{org_domain(domain)}")
    last: LookupFailed | None = None
    for name in names:
        try:
            records = [r for r in resolver.txt(name) if r.lower().startswith("v=dmarc1")]
        except LookupFailed as err:
            if err.kind == "unreachable":
                raise
            last = err
            continue
        if records:
            return name, records[0]
        last = LookupFailed(name, "missing", "TXT records but none starting v=DMARC1")
    raise last  # type: ignore[misc]


def dmarc_policy(record: str) -> str:
    """The ``p=`` tag of a DMARC record (``none`` when absent)."""
    for tag in record.split(";"):
        key, _, value = tag.strip().partition("=")
        if key.strip().lower() == "p":
            return value.strip().lower()
    return "none"
