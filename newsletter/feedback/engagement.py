"""Human or machine: which opens and clicks a reader made, and which a machine made for them.

Every rule lives here; ``newsletter.feedback.stats`` counts what it decides. Opens and clicks are SES
Open/Click events (their ``userAgent``, ``ipAddress`` and ``timestamp``), the delivery time is the
reader's Delivery event (else the time SES accepted the message, ``mail.timestamp``).

An **open** is a machine's when
- its user agent is Apple Mail Privacy Protection's proxy (exactly ``Mozilla/5.0``, nothing
  more) or it comes from Apple's network 17.0.0.0/8: MPP fetches every image of every message
  as it arrives, read or not;
- its user agent is a known image proxy (Gmail's GoogleImageProxy, Yahoo's, …): the proxy may
  fetch on arrival, so such opens are not evidence of a reader;
- it is a known security scanner's (user agent or address range, as for clicks).

A **click** is a machine's when
- it comes within ``CLICK_AFTER_DELIVERY`` seconds of delivery (nobody reads that fast);
- it is part of a burst: ``BURST_LINKS`` or more different links (or every link clicked in the
  send, when there are at least two) within ``BURST_SECONDS`` — a scanner following every link;
- its user agent or address is a known security scanner's (Microsoft Defender Safe Links,
  Mimecast, Proofpoint, Barracuda, …) or a generic HTTP library (curl, python-requests…).

A reader's click by a human also counts as a human open (their client may block images).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from datetime import datetime

CLICK_AFTER_DELIVERY = 10.0  # seconds
BURST_SECONDS = 5.0
BURST_LINKS = 3

APPLE_MPP_AGENTS = ("Mozilla/5.0",)  # the whole user agent, exactly
APPLE_NETWORKS = ("17.0.0.0/8",)
IMAGE_PROXY_RE = re.compile(r"GoogleImageProxy|ggpht\.com|YahooMailProxy|Yahoo! ?Mail ?Proxy|"
                            r"OutlookImageProxy|Mail\.ru.?ImageProxy|YandexImageProxy|Superhuman|"
                            r"Front/\d|HeyImageProxy", re.IGNORECASE)
SCANNER_RE = re.compile(r"Barracuda|Mimecast|Proofpoint|urldefense|SafeLinks|Microsoft Office Protection|"
                        r"MSOffice\s?Protection|Forcepoint|Symantec|Trend ?Micro|Sophos|FireEye|Trellix|"
                        r"Zscaler|Cisco|IronPort|Check ?Point|Fortinet|Cloudmark|SpamTitan|Vade|"
                        r"BingPreview|HeadlessChrome|PhantomJS|python-requests|python-urllib|aiohttp|"
                        r"Go-http-client|curl/|Wget|okhttp|Java/|libwww-perl|Apache-HttpClient|"
                        r"\bbot\b|crawler|spider|scanner", re.IGNORECASE)
SCANNER_NETWORKS = (
    "40.92.0.0/15", "40.107.0.0/16", "52.100.0.0/14", "104.47.0.0/17",  # Microsoft EOP / Defender
    "205.139.110.0/24", "207.211.30.0/24", "207.211.31.0/25", "185.58.84.0/22",  # Mimecast
    "148.163.128.0/19", "67.231.144.0/20", "205.220.160.0/19",  # Proofpoint
    "64.235.144.0/20", "209.222.80.0/21",  # Barracuda
    "68.232.128.0/19", "208.90.64.0/21",  # Cisco IronPort / Cloud Email Security
)
_APPLE = tuple(ipaddress.ip_network(n) for n in APPLE_NETWORKS)
_SCANNERS = tuple(ipaddress.ip_network(n) for n in SCANNER_NETWORKS)


@dataclass(frozen=True)
class Activity:
    """One open or click of one reader's message."""

    kind: str              # "open" | "click"
    at: datetime | None
    user_agent: str = ""
    ip: str = ""
    link: str | None = None


@dataclass
class Verdict:
    """One reader's message: did a human open/click it, did a machine?"""

    human_open: bool = False
    machine_open: bool = False    # opened by machines only
    human_click: bool = False
    machine_click: bool = False   # clicked by machines only
    reasons: list[str] = field(default_factory=list)  # why machine activity was called so


def _in(ip: str, networks) -> bool:
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return False
    return any(address in net for net in networks)


def scanner_reason(a: Activity) -> str | None:
    if a.user_agent and SCANNER_RE.search(a.user_agent):
        return "security scanner (user agent)"
    if a.ip and _in(a.ip, _SCANNERS):
        return "security scanner (address range)"
    return None


def open_reason(a: Activity) -> str | None:
    """Why this open is a machine's, or None for a reader's."""
    agent = a.user_agent.strip()
    if agent in APPLE_MPP_AGENTS or (a.ip and _in(a.ip, _APPLE)):
        return "Apple Mail Privacy Protection"
    if agent and IMAGE_PROXY_RE.search(agent):
        return "image proxy"
    return scanner_reason(a)


def judge(opens: list[Activity], clicks: list[Activity], *, delivered_at: datetime | None,
          send_links: int = 0) -> Verdict:
    """The verdict for one reader's message. ``send_links``: how many different links were
    clicked in the whole send (a stand-in for "every link of the message")."""
    v = Verdict()
    for a in opens:
        reason = open_reason(a)
        if reason is None:
            v.human_open = True
        else:
            v.machine_open = True
            v.reasons.append(f"open: {reason}")
    burst = _burst(clicks, send_links)
    for i, a in enumerate(clicks):
        reason = scanner_reason(a)
        if reason is None and i in burst:
            reason = "every link at once"
        if reason is None and delivered_at is not None and a.at is not None:
            if (a.at - delivered_at).total_seconds() <= CLICK_AFTER_DELIVERY:
                reason = f"within {CLICK_AFTER_DELIVERY:g} s of delivery"
        if reason is None:
            v.human_click = True
        else:
            v.machine_click = True
            v.reasons.append(f"click: {reason}")
    if v.human_click:
        v.human_open = True  # a reader who clicked opened it, pixel or not
    # a reader counts once: as human when any of it was human, as machine only otherwise
    v.machine_open = v.machine_open and not v.human_open
    v.machine_click = v.machine_click and not v.human_click
    return v


def _burst(clicks: list[Activity], send_links: int) -> set[int]:
    """Indexes of clicks in a burst of many different links within BURST_SECONDS."""
    need = BURST_LINKS if send_links < 2 else min(BURST_LINKS, send_links)
    timed = sorted((a.at, i, a.link) for i, a in enumerate(clicks) if a.at is not None)
    found: set[int] = set()
    start = 0
    for end in range(len(timed)):
        while (timed[end][0] - timed[start][0]).total_seconds() > BURST_SECONDS:
            start += 1
        window = timed[start:end + 1]
        if len({link for _, _, link in window}) >= need and need >= 2:
            found.update(i for _, i, _ in window)
    return found


def parse_time(value) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
