"""Project configuration: ``newsletter.toml`` found in the current folder or a parent.

Every relative path in the file is relative to the file's folder. With no file at all every
command works on the defaults in the current folder. Environment variables win over the file:
``NEWSLETTER_DATABASE_URL`` and ``NEWSLETTER_SECRET``.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from newsletter.errors import ConfigError

CONFIG_NAME = "newsletter.toml"
MAX_CONCURRENCY = 64  # the same bound as `send --concurrency`
TRANSPORTS = ("outbox", "ses", "smtp")


@dataclass(frozen=True)
class SesConfig:
    region: str = "us-east-1"
    profile: str = ""
    configuration_set: str = ""
    endpoint_url: str = ""
    queue_url: str = ""


@dataclass(frozen=True)
class SmtpConfig:
    host: str = "localhost"
    port: int = 587
    security: str = "starttls"  # starttls | ssl | none
    username: str = ""
    password_env: str = "NEWSLETTER_SMTP_PASSWORD"
    timeout: float = 30.0

    @property
    def password(self) -> str:
        return os.environ.get(self.password_env, "") if self.password_env else ""


@dataclass(frozen=True)
class SendConfig:
    rate: float = 0.0  # messages/s cap; 0 = the SES account's max send rate (no cap elsewhere)
    concurrency: int = 8


@dataclass(frozen=True)
class WebConfig:
    confirm_ttl_hours: int = 72  # how long a confirmation link stays valid
    subscribe_per_ip_per_hour: int = 20  # subscribe POSTs one client address may make
    confirmations_per_address_per_day: int = 3  # confirmation emails one address may receive
    trust_proxy_headers: bool = False  # take the client address from X-Forwarded-For
    welcome_email: bool = True  # send a welcome note once a subscription is active


@dataclass(frozen=True)
class EventsConfig:
    soft_bounce_limit: int = 3  # transient bounces within the window that suppress an address
    soft_bounce_window_days: int = 14


@dataclass(frozen=True)
class SourcesConfig:
    feeds: tuple[str, ...] = ()  # RSS/Atom/RDF feed URLs that `newsletter gather` polls
    timeout: float = 10.0  # seconds per feed
    concurrency: int = 10  # feeds fetched at once


@dataclass(frozen=True)
class UnsubscribeConfig:
    # An address SES receives (a receipt rule → SNS → the events queue) that `events pull` reads:
    # when set, List-Unsubscribe offers it as a mailto next to the one-click https URL.
    mailto: str = ""


@dataclass(frozen=True)
class DnsConfig:
    # Resolvers `doctor` asks (DMARC, SPF, DKIM, MX): "host[:port], …"; "" = the system's.
    # Env NEWSLETTER_DNS_NAMESERVERS wins.
    nameservers: str = ""


_SECTIONS = {
    "unsubscribe": UnsubscribeConfig,
    "dns": DnsConfig,
    "ses": SesConfig,
    "smtp": SmtpConfig,
    "send": SendConfig,
    "web": WebConfig,
    "events": EventsConfig,
    "sources": SourcesConfig,
}


@dataclass(frozen=True)
class Config:
    """The resolved configuration. ``root`` is the project folder; paths below are absolute."""

    root: Path
    file: Path | None = None
    name: str = "Newsletter"
    from_: str = "Newsletter <news@example.com>"
    reply_to: str = ""
    postal_address: str = ""
    base_url: str = "http://127.0.0.1:8000"
    lang: str = "en"
    database: str = "subscribers/subscribers.db"
    transport: str = "outbox"
    secret_file: str = ".newsletter-secret"
    editions_dir: str = "editions"
    templates_dir: str = "templates"
    outbox_dir: str = "outbox"
    build_dir: str = "build"
    subject_template: str = "{title}"  # the subject when an edition sets none: {title} {name} {date} {number}
    essay_label: str = ""  # over an essay without a heading; "" = 编者按 / Editor's note by language
    ses: SesConfig = field(default_factory=SesConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    send: SendConfig = field(default_factory=SendConfig)
    web: WebConfig = field(default_factory=WebConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    unsubscribe: UnsubscribeConfig = field(default_factory=UnsubscribeConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)

    def path(self, value: str | Path) -> Path:
        """A path from the configuration, resolved against the project folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.root / p

    @property
    def database_url(self) -> str:
        """The database to open: env ``NEWSLETTER_DATABASE_URL`` wins over the ``database`` key.

        A plain path is resolved against the project folder; ``sqlite:///…`` URLs are kept.
        """
        env = os.environ.get("NEWSLETTER_DATABASE_URL", "").strip()
        value = env or self.database
        if "://" in value:
            return value
        return str(self.path(value))

    @property
    def editions_path(self) -> Path:
        return self.path(self.editions_dir)

    @property
    def templates_path(self) -> Path:
        return self.path(self.templates_dir)

    @property
    def outbox_path(self) -> Path:
        return self.path(self.outbox_dir)

    @property
    def build_path(self) -> Path:
        return self.path(self.build_dir)

    @property
    def secret_path(self) -> Path:
        return self.path(self.secret_file)

    @property
    def from_domain(self) -> str:
        """The domain of the From address (Message-IDs are made on it)."""
        from email.utils import parseaddr

        addr = parseaddr(self.from_)[1]
        return addr.rpartition("@")[2] or "localhost"


def find_config(start: Path | None = None) -> Path | None:
    """The nearest ``newsletter.toml`` in ``start`` (default: cwd) or one of its parents."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            return candidate
    return None


def load_config(path: str | Path | None = None, *, cwd: Path | None = None) -> Config:
    """Load the configuration from ``path``, or the nearest file, or the defaults in ``cwd``.

    Raises ``ConfigError`` naming the file (and line, for TOML syntax) on anything wrong.
    """
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError("configuration file not found", file=file)
    else:
        file = find_config(cwd)
    if file is None:
        return Config(root=(cwd or Path.cwd()).resolve())
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        line = getattr(err, "lineno", None)
        raise ConfigError(f"invalid TOML: {err.msg if hasattr(err, 'msg') else err}", file=file, line=line) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read: {err}", file=file) from None
    return config_from_dict(data, root=file.resolve().parent, file=file)


def config_from_dict(data: dict[str, Any], *, root: Path, file: Path | None = None) -> Config:
    """Build a ``Config`` from parsed TOML, checking every key's type."""
    top = {f.name: f for f in fields(Config) if f.name not in ("root", "file")}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"[{key}] must be a table", file=file)
            kwargs[key] = _section(_SECTIONS[key], key, value, file)
            continue
        name = "from_" if key == "from" else key
        if name not in top or name in _SECTIONS:
            raise ConfigError(f"unknown key {key!r}", file=file)
        kwargs[name] = _typed(key, value, top[name].default, file)
    config = Config(root=root, file=file, **kwargs)
    if config.transport not in TRANSPORTS:
        raise ConfigError(f"transport must be one of {', '.join(TRANSPORTS)}, not {config.transport!r}", file=file)
    if config.smtp.security not in ("starttls", "ssl", "none"):
        raise ConfigError("smtp.security must be starttls, ssl or none", file=file)
    try:
        import string

        parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(config.subject_template)
                  if f is not None]
        unknown = [f for f, _, _ in parsed if f not in ("title", "name", "date", "number")]
        if unknown:
            raise KeyError(unknown[0])
        # {number} is empty for a draft (numbered at its first send): no spec or conversion,
        # which would fit one type of value only.
        spec = next((f"{{{f}{'!' + conv if conv else ''}{':' + sp if sp else ''}}}"
                     for f, sp, conv in parsed if sp or conv), None)
        if spec:
            raise ValueError(f"{spec}: no format spec or conversion, only the plain names")
        config.subject_template.format(title="t", name="n", date="2000-01-01", number=1)
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(f"subject_template {config.subject_template!r} is not a valid pattern ({err}): "
                          "expected text with {title}, {name}, {date} or {number}", file=file) from None
    mailto = config.unsubscribe.mailto.strip()
    if mailto and (not re.fullmatch(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", mailto)):
        raise ConfigError(f"unsubscribe.mailto must be a plain address like unsubscribe@news.example.com, "
                          f"not {mailto!r}", file=file)
    if config.send.concurrency < 1 or config.send.rate < 0:
        raise ConfigError("send.concurrency must be ≥ 1 and send.rate ≥ 0", file=file)
    _check_values(config, file)
    for feed in config.sources.feeds:
        if (not feed.lower().startswith(("http://", "https://"))
                or not feed.isprintable()):  # a "\u0000", a tab…
            raise ConfigError(f"sources.feeds: {feed!r} is not an http(s) URL", file=file)
    if config.sources.concurrency < 1 or config.sources.timeout <= 0:
        raise ConfigError("sources.concurrency must be ≥ 1 and sources.timeout > 0", file=file)
    return config


# (key, low, high) for every number in the file: a value out of range is a one-line error.
_RANGES = (
    ("send.rate", 0, 100_000), ("send.concurrency", 1, MAX_CONCURRENCY),
    ("smtp.port", 1, 65535), ("smtp.timeout", 0.1, 3600),
    ("web.confirm_ttl_hours", 1, 24 * 366), ("web.subscribe_per_ip_per_hour", 1, 1_000_000),
    ("web.confirmations_per_address_per_day", 1, 1000),
    ("events.soft_bounce_limit", 1, 1000), ("events.soft_bounce_window_days", 1, 3660),
    ("sources.timeout", 0.1, 3600), ("sources.concurrency", 1, 1000),
)
_URL_RE = re.compile(r"[A-Za-z0-9\-._~:/\[\]@!$&()*+;=%]+")
_LANG_RE = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*")


def _check_values(config: Config, file: Path | None) -> None:
    """Ranges, URLs and the values that become mail headers (``newsletter.headers``: no control
    character even inside an RFC 2047 encoded word; one mailbox for ``from`` and ``reply_to``)."""
    from newsletter import headers
    from newsletter.errors import ValidationError

    for key, low, high in _RANGES:
        section, _, name = key.partition(".")
        value = getattr(getattr(config, section), name)
        if not (low <= value <= high):  # NaN fails too
            raise ConfigError(f"{key} = {value!r} is out of range: expected {low} to {high}", file=file)
    try:
        headers.check("name", config.name)
        if not config.name.strip():
            raise ValidationError("name must not be empty (it is the masthead and the List-Id)")
        if len(config.name) > 200:
            raise ValidationError("name is longer than 200 characters")
        headers.parse_mailbox("from", config.from_)
        if config.reply_to:
            headers.parse_mailbox("reply_to", config.reply_to)
    except ValidationError as err:
        raise ConfigError(err.message, file=file) from None
    _check_url("base_url", config.base_url, file)
    from newsletter.dnscheck import parse_nameservers

    try:
        parse_nameservers(config.dns.nameservers)
    except ValueError as err:
        raise ConfigError(f"dns.nameservers: {err}", file=file) from None
    if config.ses.endpoint_url:
        _check_url("ses.endpoint_url", config.ses.endpoint_url, file)
    if not _LANG_RE.fullmatch(config.lang):
        raise ConfigError(f"lang = {config.lang!r} is not a language tag like en or zh-CN", file=file)
    for key in ("smtp.host", "ses.region", "smtp.username", "smtp.password_env", "ses.profile",
                "ses.configuration_set", "ses.queue_url"):
        section, _, name = key.partition(".")
        if any(not c.isprintable() for c in getattr(getattr(config, section), name)):
            raise ConfigError(f"{key} contains a control character", file=file)


def _check_url(key: str, value: str, file: Path | None) -> None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        # Only URL characters, and none that ends or splits a header's <URL> list (`>` `,`):
        # base_url goes into List-Unsubscribe as well as into every link.
        ok = (parts.scheme in ("http", "https") and bool(parts.hostname) and bool(_URL_RE.fullmatch(value))
              and not parts.query and not parts.fragment and len(value) <= 300)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"{key} = {value[:80]!r} must be an http:// or https:// URL with a host "
                          "(no query or fragment)", file=file)


def _section(cls: type, section: str, values: dict[str, Any], file: Path | None) -> Any:
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown key {section}.{key}", file=file)
        kwargs[key] = _typed(f"{section}.{key}", value, known[key].default, file)
    return cls(**kwargs)


def _typed(key: str, value: Any, default: Any, file: Path | None) -> Any:
    expected = type(default)
    if expected is tuple:  # a TOML array of strings (sources.feeds)
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise ConfigError(f"{key} must be an array of strings, e.g. [\"https://example.com/rss\"]", file=file)
        return tuple(v.strip() for v in value)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"{key} must be {expected.__name__}, not {type(value).__name__}", file=file)
    if isinstance(value, str) and any(c in value for c in "\r\n") and key in ("name", "from", "reply_to"):
        raise ConfigError(f"{key} must not contain line breaks (it goes into mail headers)", file=file)
    return value


def load_secret(config: Config, *, create: bool = True, notify=None) -> bytes:
    """The signing key: env ``NEWSLETTER_SECRET`` wins, else the secret file.

    With ``create`` a missing secret file is made (32 random bytes, hex, mode 0600) and
    ``notify(message)`` is told so. Raises ``ConfigError`` when there is no secret to be had.
    """
    env = os.environ.get("NEWSLETTER_SECRET", "").strip()
    if env:
        if len(env) < 16:
            raise ConfigError("NEWSLETTER_SECRET is too short (at least 16 characters)")
        return env.encode("utf-8")
    path = config.secret_path
    if path.is_file():
        return _read_secret(path)
    if path.is_dir():
        raise ConfigError("secret_file is a folder: expected a file holding the signing key "
                          "(remove the folder or point secret_file elsewhere)", file=path)
    if path.is_symlink():
        raise ConfigError("secret_file is a symbolic link that leads nowhere (broken or a loop): "
                          "expected a file holding the signing key", file=path)
    if not create:
        raise ConfigError(f"no secret: set NEWSLETTER_SECRET or run `newsletter init` ({path} is missing)")
    try:
        write_secret(path)
    except FileExistsError:  # another process made it just now: use theirs
        return _read_secret(path)
    except OSError as err:
        raise ConfigError(f"cannot create the secret file: {err.strerror or err}", file=path) from None
    if notify is not None:
        notify(f"created a new signing secret in {path} (keep it out of version control)")
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError("the secret file is not UTF-8 text", file=path) from None
    except OSError as err:
        raise ConfigError(f"cannot read the secret file: {err.strerror or err}", file=path) from None
    if len(value) < 16:
        raise ConfigError("secret file is too short (at least 16 characters)", file=path)
    return value.encode("utf-8")


def write_secret(path: Path) -> None:
    """Write a fresh random secret to ``path``, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(secrets.token_hex(32) + "\n")


def stderr_notice(message: str) -> None:
    print(message, file=sys.stderr)
