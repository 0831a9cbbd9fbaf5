"""``doctor``: is this project ready to send? One ``Check`` per question, each with a hint.

Local checks (configuration, secret, database) always run; the SES and SQS checks run when the
transport is ``ses`` or an SES setting is filled in. Every AWS call goes through boto3 with the
configured region/profile/endpoint; a failure becomes a failed check, never a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parseaddr
from enum import Enum
from typing import Any

from newsletter.aws import aws_client, error_code
from newsletter.config import Config, load_secret
from newsletter.errors import NewsletterError

# A new SES account starts in the sandbox with exactly this quota.
_SANDBOX_QUOTA = (200.0, 1.0)
_FEEDBACK_TYPES = {"bounce", "complaint"}


class Status(str, Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    hint: str = ""

    def line(self) -> str:
        mark = {Status.OK: "ok  ", Status.WARN: "warn", Status.FAIL: "FAIL", Status.SKIP: "skip"}[self.status]
        hint = f" — {self.hint}" if self.hint and self.status is not Status.OK else ""
        return f"{mark}  {self.name:<20} {self.detail}{hint}"


class _AwsFailed(Exception):
    """An AWS call failed; carries the failed ``Check`` to report."""

    def __init__(self, check: Check):
        super().__init__(check.detail)
        self.check = check


def run_checks(config: Config, *, clients: Callable[[str], Any] | None = None) -> list[Check]:
    """Every check, in order. ``clients(service)`` makes boto3 clients (default: from config)."""
    checks = [check_config(config), check_secret(config), check_database(config)]
    if not _uses_ses(config):
        checks.append(Check("SES", Status.SKIP, f"transport is {config.transport}; SES checks skipped",
                            'set transport = "ses" to send through Amazon SES'))
        if config.transport == "smtp":
            checks += check_dns(config)
            checks.append(_smtp_dkim_note(config))
        return checks
    make = clients or (lambda service: aws_client(config, service))
    try:
        ses = make("ses")
        checks += check_identity(config, ses)
        checks += check_dns(config, ses)
        if config.transport == "smtp":
            checks.append(_smtp_dkim_note(config))
        checks += check_account(ses, make, _active_subscribers(config))
        checks.append(check_configuration_set(config, ses))
        if config.unsubscribe.mailto.strip():
            checks += check_inbound(config, ses, make)
    except _AwsFailed as failed:
        checks.append(failed.check)
    checks.append(check_queue(config, make))
    checks.append(check_events(config))
    return checks


def failed(checks: list[Check]) -> bool:
    return any(c.status is Status.FAIL for c in checks)


# -- local -------------------------------------------------------------------------------------

def check_config(config: Config) -> Check:
    where = str(config.file) if config.file else "no newsletter.toml (defaults)"
    problems, notes = [], []
    address = parseaddr(config.from_)[1]
    if "@" not in address:
        problems.append(f"from = {config.from_!r} has no email address")
    if not config.base_url.startswith("https://"):
        notes.append("base_url is not https (readers' links point at it)")
    if not config.postal_address.strip():
        notes.append("postal_address is empty (the law wants one in every email)")
    if config.transport == "ses" and not config.ses.region:
        problems.append("ses.region is empty")
    if problems:
        return Check("configuration", Status.FAIL, f"{where}: " + "; ".join(problems + notes),
                     "edit newsletter.toml (`newsletter init` writes a complete one)")
    if notes or config.file is None:
        return Check("configuration", Status.WARN, f"{where}: " + ("; ".join(notes) or "using defaults"),
                     "edit newsletter.toml")
    return Check("configuration", Status.OK, f"{where} (transport {config.transport})")


def check_secret(config: Config) -> Check:
    try:
        load_secret(config, create=False)
    except NewsletterError as err:
        return Check("secret", Status.FAIL, str(err).removeprefix("error: "),
                     "run `newsletter init` or set NEWSLETTER_SECRET (16+ characters)")
    source = "NEWSLETTER_SECRET" if os.environ.get("NEWSLETTER_SECRET", "").strip() else str(config.secret_path)
    return Check("secret", Status.OK, f"signing key present ({source})")


def check_database(config: Config) -> Check:
    """The project's database on its engine: there (a SQLite file not made yet is a warning),
    reachable, its schema current for this program, and how many subscribers it holds."""
    from newsletter.store import database_url
    from newsletter.store.connection import connect_existing
    from newsletter.store.dburl import describe, is_postgres
    from newsletter.store.health import subscriber_count, versions

    postgres = False
    try:
        url = database_url(config)
        postgres = is_postgres(url)
        where = describe(url)
        conn = connect_existing(url, migrate=False)
        if conn is None:
            return Check("database", Status.WARN, f"{where} does not exist yet",
                         "it is created by the first command that needs it (e.g. `newsletter lists create`)")
        try:
            version, latest = versions(conn)
            subscribers = subscriber_count(conn) if version == latest else 0  # a schema it knows
        finally:
            conn.close()
    except Exception as err:  # StoreError, a driver error (not a database, locked…), OSError
        if postgres:
            return Check("database", Status.FAIL, str(err).removeprefix("error: "),
                         "check the URL, the server, and PGPASSWORD / ~/.pgpass / PGSERVICE")
        return Check("database", Status.FAIL, f"cannot open {config.database_url}: {err}",
                     "check the database setting / NEWSLETTER_DATABASE_URL and file permissions")
    if version < latest:
        return Check("database", Status.FAIL, f"{where}: schema version {version}, this program needs {latest}",
                     "run `newsletter db migrate`" if postgres
                     else "back it up; the next command that opens it migrates it")
    if version > latest:
        return Check("database", Status.FAIL, f"{where}: schema version {version} is newer than this program",
                     "upgrade newsletter")
    return Check("database", Status.OK, f"{where}: schema version {version} (latest), {subscribers} subscribers")


def _existing(config: Config):
    """The project's database, opened without migrating, or None when there is none yet."""
    from newsletter.store.connection import connect_existing

    return connect_existing(config, migrate=False)


def check_events(config: Config) -> Check:
    """When the last SES event arrived, and whether any queue message was kept aside."""
    from newsletter.store.health import events_overview, versions

    try:
        conn = _existing(config)
        if conn is None:
            return Check("events", Status.SKIP, "no database yet")
        try:
            version, latest = versions(conn)
            if version < latest:
                return Check("events", Status.SKIP, "database not migrated yet")
            last, kept = events_overview(conn)
        finally:
            conn.close()
    except Exception as err:  # reported by check_database already
        return Check("events", Status.SKIP, f"cannot read the database ({err})")
    seen = f"last event received {last}" if last else "no event received yet"
    if kept:
        return Check("events", Status.WARN, f"{seen}; {kept} queue messages kept aside",
                     "see `newsletter events dead-letters` (`--retry` after an upgrade)")
    return Check("events", Status.OK, seen + " (run `newsletter events pull` from cron or systemd)")


def _active_subscribers(config: Config) -> int | None:
    from newsletter.store.health import subscriber_count

    try:
        conn = _existing(config)
        if conn is None:
            return None
        try:
            return subscriber_count(conn, status="active")
        finally:
            conn.close()
    except Exception:  # reported by check_database already
        return None


# -- SES ---------------------------------------------------------------------------------------

def _uses_ses(config: Config) -> bool:
    return config.transport == "ses" or bool(config.ses.queue_url or config.ses.configuration_set
                                             or config.unsubscribe.mailto.strip())


def _call(name: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
    """Call AWS; any failure ends the SES checks with one failed line that says why."""
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError, NoRegionError

    try:
        return fn(**kwargs)
    except NoCredentialsError:
        raise _AwsFailed(Check("AWS credentials", Status.FAIL, "none found",
                               "configure boto3's chain (env vars, ~/.aws, instance role) or set ses.profile"))
    except NoRegionError:
        raise _AwsFailed(Check(name, Status.FAIL, "no AWS region", "set ses.region"))
    except EndpointConnectionError as err:
        raise _AwsFailed(Check(name, Status.FAIL, f"cannot reach SES: {err}",
                               "check ses.region / ses.endpoint_url and the network"))
    except Exception as err:
        raise _AwsFailed(Check(name, Status.FAIL, f"{error_code(err)}: {err}",
                               "check the IAM permissions for SES (ses:Get*, ses:Describe*)"))


def check_identity(config: Config, ses: Any) -> list[Check]:
    """The From address or its domain must be verified; DKIM should be on and verified."""
    address = parseaddr(config.from_)[1].lower()
    domain = address.rpartition("@")[2]
    attrs = _call("sender identity", ses.get_identity_verification_attributes,
                  Identities=[address, domain])["VerificationAttributes"]
    verified = [i for i in (domain, address) if attrs.get(i, {}).get("VerificationStatus") == "Success"]
    if not verified:
        states = ", ".join(f"{i}: {attrs[i].get('VerificationStatus')}" for i in (domain, address) if i in attrs)
        return [Check("sender identity", Status.FAIL, f"neither {domain} nor {address} is verified"
                      + (f" ({states})" if states else ""),
                      f"verify the domain: `aws sesv2 create-email-identity --email-identity {domain}` "
                      "and publish the DKIM CNAME records it returns")]
    identity = verified[0]
    checks = [Check("sender identity", Status.OK, f"{identity} verified for sending")]
    dkim = _call("DKIM", ses.get_identity_dkim_attributes, Identities=[domain])["DkimAttributes"].get(domain, {})
    status = dkim.get("DkimVerificationStatus", "NotStarted")
    if dkim.get("DkimEnabled") and status == "Success":
        checks.append(Check("DKIM", Status.OK, f"{domain}: enabled, {status}"))
    else:
        checks.append(Check("DKIM", Status.WARN, f"{domain}: {'enabled' if dkim.get('DkimEnabled') else 'disabled'}, {status}",
                            "publish the three DKIM CNAME records; Gmail and Yahoo require DKIM for bulk mail"))
    return checks


def check_account(ses: Any, make: Callable[[str], Any], active: int | None) -> list[Check]:
    quota = _call("sending quota", ses.get_send_quota)
    max24, rate, sent = quota.get("Max24HourSend", 0.0), quota.get("MaxSendRate", 0.0), quota.get("SentLast24Hours", 0.0)
    left = max(max24 - sent, 0) if max24 >= 0 else float("inf")
    checks = [_account_mode(make, (max24, rate))]
    line = f"max send rate {rate:g}/s; {left:,.0f} of {max24:,.0f} left in the last 24 h"
    if left <= 0:
        checks.append(Check("sending quota", Status.FAIL, line, "wait for the 24-hour window or ask AWS for a higher quota"))
    elif active is not None and active > left:
        checks.append(Check("sending quota", Status.WARN, f"{line}; {active:,} active subscribers",
                            "a full send would stop at the quota: request a higher one in the SES console"))
    else:
        checks.append(Check("sending quota", Status.OK, line))
    return checks


def _account_mode(make: Callable[[str], Any], quota: tuple[float, float]) -> Check:
    """SES v2 GetAccount says sandbox or production; an endpoint without it (moto) leaves us
    the quota, which is exactly 200/day at 1/s in the sandbox."""
    hint = "request production access in the SES console (the sandbox only sends to verified addresses)"
    try:
        account = make("sesv2").get_account()
    except Exception:
        if quota == _SANDBOX_QUOTA:
            return Check("account", Status.WARN, "sandbox (inferred from the 200/day, 1/s quota)", hint)
        return Check("account", Status.OK, "production (inferred from the quota)")
    if not account.get("SendingEnabled", True):
        return Check("account", Status.FAIL, f"sending is paused ({account.get('EnforcementStatus', 'unknown')})",
                     "see the SES console's reputation dashboard and contact AWS")
    if not account.get("ProductionAccessEnabled", False):
        return Check("account", Status.WARN, "sandbox", hint)
    return Check("account", Status.OK, f"production, enforcement {account.get('EnforcementStatus', 'HEALTHY')}")


def check_configuration_set(config: Config, ses: Any) -> Check:
    name = config.ses.configuration_set.strip()
    if not name:
        return Check("configuration set", Status.WARN, "none: opens, clicks and delays are not published",
                     "create one with an SNS event destination and set ses.configuration_set")
    try:
        answer = ses.describe_configuration_set(ConfigurationSetName=name,
                                                ConfigurationSetAttributeNames=["eventDestinations"])
    except Exception as err:
        code = error_code(err)
        if "DoesNotExist" in code:
            return Check("configuration set", Status.FAIL, f"{name!r} does not exist",
                         f"`aws sesv2 create-configuration-set --configuration-set-name {name}`")
        return Check("configuration set", Status.FAIL, f"{name!r}: {code}: {err}",
                     "check the IAM permissions for SES (ses:DescribeConfigurationSet)")
    destinations = [d for d in answer.get("EventDestinations") or [] if d and d.get("Enabled", True)]
    to_sns = [d for d in destinations if d.get("SNSDestination")]
    covered = {t.lower() for d in to_sns for t in d.get("MatchingEventTypes", [])}
    if not to_sns or not _FEEDBACK_TYPES <= covered:
        return Check("configuration set", Status.FAIL,
                     f"{name!r} has no enabled SNS event destination for bounce and complaint",
                     "add one: `aws sesv2 create-configuration-set-event-destination` with "
                     "MatchingEventTypes BOUNCE, COMPLAINT, DELIVERY, OPEN, CLICK")
    topic = to_sns[0]["SNSDestination"].get("TopicARN", "?")
    return Check("configuration set", Status.OK, f"{name!r} → {topic} ({', '.join(sorted(covered))})")


def check_queue(config: Config, make: Callable[[str], Any]) -> Check:
    url = config.ses.queue_url.strip()
    if not url:
        return Check("SQS queue", Status.FAIL, "ses.queue_url is not set: nobody reads bounces and complaints",
                     "create a queue, subscribe it to the SNS topic, set ses.queue_url, run `newsletter events pull`")
    try:
        attrs = make("sqs").get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
    except Exception as err:
        return Check("SQS queue", Status.FAIL, f"{url}: {error_code(err)}",
                     "check ses.queue_url, ses.region and the IAM permissions (sqs:ReceiveMessage, sqs:DeleteMessage)")
    waiting = int(attrs.get("ApproximateNumberOfMessages", 0))
    return Check("SQS queue", Status.OK, f"{url} reachable, {waiting} messages waiting"
                 + (" (run `newsletter events pull`)" if waiting else ""))


# -- DNS: DMARC and alignment ------------------------------------------------------------------

def check_dns(config: Config, ses: Any = None) -> list[Check]:
    """DMARC for the From domain; with SES, the DKIM CNAMEs and the custom MAIL FROM domain (SPF
    alignment). Lookups go to ``[dns] nameservers`` (or the system's resolver); when no resolver
    answers, one line says so and the other DNS checks are left out."""
    from newsletter.dnscheck import LookupFailed, Resolver, dmarc_policy, dmarc_record, lookups_off

    if lookups_off(config):
        return [Check("DNS", Status.SKIP, "lookups turned off ([dns] nameservers / NEWSLETTER_DNS_NAMESERVERS = off): "
                      "DMARC, DKIM and MAIL FROM records not checked")]
    domain = config.from_domain.lower()
    resolver = Resolver(config)
    checks = []
    try:
        where, record = dmarc_record(resolver, domain)
        policy = dmarc_policy(record)
        line = f"{where}: p={policy}"
        checks.append(Check("DMARC", Status.OK, line + (" (monitoring only)" if policy == "none" else "")))
    except LookupFailed as err:
        if err.kind == "unreachable":
            return [Check("DNS", Status.WARN, f"cannot look up {err.name}: {err.detail}",
                          "point [dns] nameservers (or NEWSLETTER_DNS_NAMESERVERS) at a resolver that answers")]
        checks.append(Check("DMARC", Status.FAIL, f"no DMARC record for {domain} (_dmarc.{domain} TXT)",
                            f'publish _dmarc.{domain} TXT "v=DMARC1; p=none; rua=mailto:dmarc@{domain}": '
                            "Gmail and Yahoo require DMARC of bulk senders"))
    if ses is not None:
        checks += _check_dkim_dns(resolver, ses, domain)
        checks += _check_mail_from(config, resolver, ses, domain)
    return checks


def _check_dkim_dns(resolver, ses: Any, domain: str) -> list[Check]:
    from newsletter.dnscheck import LookupFailed

    dkim = _call("DKIM", ses.get_identity_dkim_attributes, Identities=[domain])["DkimAttributes"].get(domain, {})
    tokens = dkim.get("DkimTokens") or []
    if not tokens:
        return [Check("DKIM DNS", Status.WARN, f"SES has no DKIM tokens for {domain}",
                      f"`aws ses verify-domain-dkim --domain {domain}` and publish the three CNAMEs")]
    missing = []
    for token in tokens:
        name = f"{token}._domainkey.{domain}"
        try:
            target = resolver.cname(name)
        except LookupFailed as err:
            missing.append(f"{name} ({err.detail})")
            continue
        if not target.endswith("dkim.amazonses.com"):
            missing.append(f"{name} → {target}")
    if missing:
        return [Check("DKIM DNS", Status.FAIL, f"{len(missing)} of {len(tokens)} DKIM CNAMEs wrong or missing: "
                      + "; ".join(missing[:3]),
                      f"publish each as CNAME <token>._domainkey.{domain} → <token>.dkim.amazonses.com")]
    return [Check("DKIM DNS", Status.OK, f"{len(tokens)} CNAMEs under _domainkey.{domain} point at SES")]


def _check_mail_from(config: Config, resolver, ses: Any, domain: str) -> list[Check]:
    """A custom MAIL FROM domain under the From domain makes SPF align (DMARC passes on SPF as
    well as DKIM); without one the envelope sender is amazonses.com."""
    from newsletter.dnscheck import LookupFailed

    attrs = _call("MAIL FROM", ses.get_identity_mail_from_domain_attributes,
                  Identities=[domain])["MailFromDomainAttributes"].get(domain, {})
    mail_from = (attrs.get("MailFromDomain") or "").lower()
    region = config.ses.region or "us-east-1"
    mx_host = f"feedback-smtp.{region}.amazonses.com"
    if not mail_from:
        return [Check("MAIL FROM", Status.WARN,
                      f"no custom MAIL FROM domain for {domain}: SPF passes for amazonses.com, not aligned "
                      "with the From domain (DMARC rests on DKIM alone)",
                      f"`aws sesv2 put-email-identity-mail-from-attributes --email-identity {domain} "
                      f"--mail-from-domain mail.{domain}`, then MX mail.{domain} → 10 {mx_host} and "
                      f'TXT mail.{domain} "v=spf1 include:amazonses.com ~all"')]
    problems = []
    status = attrs.get("MailFromDomainStatus", "Pending")
    if status != "Success":
        problems.append(f"SES says {status}")
    if not (mail_from == domain or mail_from.endswith("." + domain)):
        problems.append(f"{mail_from} is not under {domain} (no alignment)")
    try:
        if mx_host not in resolver.mx(mail_from):
            problems.append(f"MX {mail_from} does not point at {mx_host}")
    except LookupFailed as err:
        problems.append(f"MX {mail_from}: {err.detail}")
    try:
        spf = [r for r in resolver.txt(mail_from) if r.lower().startswith("v=spf1")]
        if not any("include:amazonses.com" in r.lower() for r in spf):
            problems.append(f"TXT {mail_from} has no SPF record including amazonses.com")
    except LookupFailed as err:
        problems.append(f"TXT {mail_from} has no SPF record including amazonses.com" if err.kind == "missing"
                        else f"SPF TXT {mail_from}: {err.detail}")
    if problems:
        return [Check("MAIL FROM", Status.FAIL, f"{mail_from}: " + "; ".join(problems),
                      f"MX {mail_from} → 10 {mx_host}; TXT {mail_from} \"v=spf1 include:amazonses.com ~all\"")]
    return [Check("MAIL FROM", Status.OK, f"{mail_from}: MX and SPF in place (SPF aligned with {domain})")]


def _smtp_dkim_note(config: Config) -> Check:
    return Check("DKIM (SMTP relay)", Status.WARN,
                 f"cannot be checked from here: the relay ({config.smtp.host}) must DKIM-sign as "
                 f"{config.from_domain} and cover List-Unsubscribe and List-Unsubscribe-Post",
                 "Gmail and Yahoo ignore one-click unsubscribe unless DKIM signs those two headers "
                 "(h=…:list-unsubscribe:list-unsubscribe-post); the SES SMTP interface does so")


# -- the mailto unsubscribe: SES inbound --------------------------------------------------------

def check_inbound(config: Config, ses: Any, make: Callable[[str], Any]) -> list[Check]:
    """``[unsubscribe] mailto`` is only real when SES receives that address and tells our queue:
    an active receipt rule covering it with an SNS action, the topic subscribed by the queue,
    and the domain's MX at SES's inbound endpoint."""
    from newsletter.dnscheck import LookupFailed, Resolver

    address = config.unsubscribe.mailto.strip().lower()
    domain = address.rpartition("@")[2]
    hint = ("create a receipt rule for it with an SNS action to the events topic: `aws ses create-receipt-rule "
            "--rule-set-name newsletter --rule '{\"Name\":\"unsubscribe\",\"Enabled\":true,\"Recipients\":"
            f"[\"{address}\"],\"Actions\":[{{\"SNSAction\":{{\"TopicArn\":\"<TOPIC>\"}}}}]}}'` "
            "and `aws ses set-active-receipt-rule-set --rule-set-name newsletter`")
    try:
        active = ses.describe_active_receipt_rule_set()
    except Exception as err:
        return [Check("unsubscribe mailto", Status.FAIL, f"cannot read the receipt rules: {error_code(err)}",
                      "check the region (SES receives mail in a few regions only) and ses:Describe* permissions")]
    rules = [r for r in active.get("Rules") or [] if r.get("Enabled", False)]
    if not active.get("Metadata"):
        return [Check("unsubscribe mailto", Status.FAIL, f"{address}: no active receipt rule set", hint)]

    def covers(rule: dict) -> bool:
        recipients = [r.lower() for r in rule.get("Recipients") or []]
        return (not recipients or address in recipients or domain in recipients
                or any(r.startswith(".") and domain.endswith(r) for r in recipients))

    topics = [a["SNSAction"]["TopicArn"] for r in rules if covers(r)
              for a in r.get("Actions") or [] if a.get("SNSAction", {}).get("TopicArn")]
    if not topics:
        return [Check("unsubscribe mailto", Status.FAIL,
                      f"no enabled receipt rule sends mail for {address} to SNS", hint)]
    checks = [Check("unsubscribe mailto", Status.OK, f"{address}: receipt rule → {topics[0]}")]
    queue_url = config.ses.queue_url.strip()
    if queue_url:
        try:
            queue_arn = make("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
                "Attributes"]["QueueArn"]
            subs = make("sns").list_subscriptions_by_topic(TopicArn=topics[0]).get("Subscriptions", [])
            if not any(s.get("Protocol") == "sqs" and s.get("Endpoint") == queue_arn for s in subs):
                checks.append(Check("unsubscribe topic", Status.FAIL,
                                    f"{topics[0]} is not subscribed by the queue {queue_arn}",
                                    f"`aws sns subscribe --topic-arn {topics[0]} --protocol sqs "
                                    f"--notification-endpoint {queue_arn}`"))
        except Exception as err:
            checks.append(Check("unsubscribe topic", Status.WARN, f"cannot check the topic's subscriptions: "
                                f"{error_code(err)}", "allow sns:ListSubscriptionsByTopic"))
    inbound = f"inbound-smtp.{config.ses.region or 'us-east-1'}.amazonaws.com"
    from newsletter.dnscheck import lookups_off

    if lookups_off(config):
        return checks
    try:
        hosts = Resolver(config).mx(domain)
        if inbound not in hosts:
            checks.append(Check("unsubscribe MX", Status.FAIL, f"MX {domain}: {', '.join(hosts)}",
                                f"point MX {domain} at 10 {inbound} so that SES receives {address}"))
        else:
            checks.append(Check("unsubscribe MX", Status.OK, f"MX {domain} → {inbound}"))
    except LookupFailed as err:
        status = Status.WARN if err.kind == "unreachable" else Status.FAIL
        checks.append(Check("unsubscribe MX", status, f"MX {domain}: {err.detail}",
                            f"point MX {domain} at 10 {inbound} so that SES receives {address}"))
    return checks
