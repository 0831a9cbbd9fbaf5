"""`doctor`'s DMARC / DKIM / custom MAIL FROM checks and the mailto unsubscribe's receipt rule,
against a local DNS stub on 127.0.0.1 (tests/dns_stub.py) and a real moto server."""

from __future__ import annotations

import boto3
import pytest

from dns_stub import DnsStub
from events_support import make_queue
from newsletter.config import load_config
from newsletter.doctor import Status, run_checks


def aws(moto, service):
    return boto3.client(service, region_name="us-east-1", endpoint_url=moto)


def by_name(checks):
    return {c.name: c for c in checks}


def use_dns(monkeypatch, stub: DnsStub) -> None:
    monkeypatch.setenv("NEWSLETTER_DNS_NAMESERVERS", stub.address)


def smtp_project(project):
    text = 'transport = "smtp"\n' + (project / "newsletter.toml").read_text(encoding="utf-8")
    (project / "newsletter.toml").write_text(text + '\n[smtp]\nhost = "relay.example.net"\n', encoding="utf-8")
    return load_config()


@pytest.mark.parametrize("records, status, expected", [
    ({("_dmarc.example.com", "TXT"): ['"v=DMARC1; p=quarantine; rua=mailto:d@example.com"']},
     Status.OK, "_dmarc.example.com: p=quarantine"),
    ({("_dmarc.example.com", "TXT"): ['"v=DMARC1; p=none"']}, Status.OK, "p=none (monitoring only)"),
    ({("_dmarc.example.com", "TXT"): ['"google-site-verification=x"']}, Status.FAIL, "no DMARC record for example.com"),
    ({("example.com", "A"): ["192.0.2.1"]}, Status.FAIL, "no DMARC record for example.com"),
])
def test_dmarc_record_of_the_from_domain(project, monkeypatch, records, status, expected):
    config = smtp_project(project)
    with DnsStub(records) as stub:
        use_dns(monkeypatch, stub)
        checks = by_name(run_checks(config))
    assert checks["DMARC"].status is status
    assert expected in checks["DMARC"].detail
    assert ("_dmarc.example.com", "TXT") in stub.queries
    if status is Status.FAIL:
        assert "Gmail and Yahoo require DMARC" in checks["DMARC"].hint


def test_dmarc_falls_back_to_the_organisational_domain(project, monkeypatch):
    toml = (project / "newsletter.toml").read_text(encoding="utf-8").replace("news@example.com", "news@mail.example.com")
    (project / "newsletter.toml").write_text(toml, encoding="utf-8")
    config = smtp_project(project)
    with DnsStub({("_dmarc.example.com", "TXT"): ['"v=DMARC1; p=reject"']}) as stub:
        use_dns(monkeypatch, stub)
        check = by_name(run_checks(config))["DMARC"]
    assert check.status is Status.OK and check.detail == "_dmarc.example.com: p=reject"


def test_no_resolver_answering_is_one_warning_not_a_hang(project, monkeypatch, cli):
    smtp_project(project)
    monkeypatch.setenv("NEWSLETTER_DNS_NAMESERVERS", "127.0.0.1:9")  # a port nobody answers on
    result = cli("doctor")
    lines = result.stdout.splitlines()
    dns = [l for l in lines if l.startswith("warn  DNS")]
    assert len(dns) == 1 and "NEWSLETTER_DNS_NAMESERVERS" in dns[0]
    assert not any("DMARC" in l for l in lines)


def test_dns_lookups_can_be_turned_off(project, cli):
    smtp_project(project)  # the suite's environment: NEWSLETTER_DNS_NAMESERVERS=off
    line = next(l for l in cli("doctor").stdout.splitlines() if " DNS " in l)
    assert line.startswith("skip  DNS") and "lookups turned off" in line


def test_smtp_transport_says_the_relay_must_dkim_sign_list_unsubscribe(project, monkeypatch, cli):
    smtp_project(project)
    with DnsStub({("_dmarc.example.com", "TXT"): ['"v=DMARC1; p=none"']}) as stub:
        use_dns(monkeypatch, stub)
        result = cli("doctor")
    line = next(l for l in result.stdout.splitlines() if "DKIM (SMTP relay)" in l)
    assert "relay.example.net" in line and "List-Unsubscribe and List-Unsubscribe-Post" in line


def ses_project(project, moto, **extra):
    _, queue_url = make_queue(moto)
    ses = aws(moto, "ses")
    ses.verify_domain_identity(Domain="example.com")
    tokens = ses.verify_domain_dkim(Domain="example.com")["DkimTokens"]
    text = 'transport = "ses"\n' + (project / "newsletter.toml").read_text(encoding="utf-8")
    text += f'\n[ses]\nendpoint_url = "{moto}"\nregion = "us-east-1"\nqueue_url = "{queue_url}"\n'
    for section, values in extra.items():
        text += f"\n[{section}]\n" + "".join(f'{k} = "{v}"\n' for k, v in values.items())
    (project / "newsletter.toml").write_text(text, encoding="utf-8")
    return load_config(), tokens, queue_url


def aligned_dns(tokens, *, dkim=True, mx=True, spf=True):
    records = {("_dmarc.example.com", "TXT"): ['"v=DMARC1; p=quarantine"']}
    if dkim:
        records.update({(f"{t}._domainkey.example.com", "CNAME"): [f"{t}.dkim.amazonses.com."] for t in tokens})
    if mx:
        records[("bounce.example.com", "MX")] = ["10 feedback-smtp.us-east-1.amazonses.com."]
    if spf:
        records[("bounce.example.com", "TXT")] = ['"v=spf1 include:amazonses.com ~all"']
    return records


def test_dkim_cnames_and_an_aligned_custom_mail_from(project, moto, monkeypatch):
    config, tokens, _ = ses_project(project, moto)
    with DnsStub(aligned_dns(tokens)) as stub:
        use_dns(monkeypatch, stub)
        checks = by_name(run_checks(config))
        assert checks["MAIL FROM"].status is Status.WARN
        assert "no custom MAIL FROM domain" in checks["MAIL FROM"].detail
        assert "put-email-identity-mail-from-attributes" in checks["MAIL FROM"].hint
        aws(moto, "ses").set_identity_mail_from_domain(Identity="example.com", MailFromDomain="bounce.example.com")
        checks = by_name(run_checks(config))
    assert checks["DMARC"].status is Status.OK
    assert checks["DKIM DNS"].status is Status.OK and "3 CNAMEs" in checks["DKIM DNS"].detail
    assert checks["MAIL FROM"].status is Status.OK, checks["MAIL FROM"]
    assert "SPF aligned with example.com" in checks["MAIL FROM"].detail


@pytest.mark.parametrize("broken, name, expected", [
    ("dkim", "DKIM DNS", "3 of 3 DKIM CNAMEs wrong or missing"),
    ("mx", "MAIL FROM", "MX bounce.example.com"),
    ("spf", "MAIL FROM", "no SPF"),
])
def test_each_missing_alignment_record_fails_with_a_hint(project, moto, monkeypatch, broken, name, expected):
    config, tokens, _ = ses_project(project, moto)
    aws(moto, "ses").set_identity_mail_from_domain(Identity="example.com", MailFromDomain="bounce.example.com")
    with DnsStub(aligned_dns(tokens, **{broken: False})) as stub:
        use_dns(monkeypatch, stub)
        check = by_name(run_checks(config))[name]
    assert check.status is Status.FAIL and expected in check.detail, check
    assert check.hint


def inbound_rule(moto, queue_url, address="unsubscribe@example.com", *, subscribe=True):
    sns, ses, sqs = aws(moto, "sns"), aws(moto, "ses"), aws(moto, "sqs")
    topic = sns.create_topic(Name="inbound")["TopicArn"]
    if subscribe:
        arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    ses.create_receipt_rule_set(RuleSetName="newsletter")
    ses.create_receipt_rule(RuleSetName="newsletter", Rule={
        "Name": "unsubscribe", "Enabled": True, "Recipients": [address],
        "Actions": [{"SNSAction": {"TopicArn": topic, "Encoding": "UTF-8"}}]})
    ses.set_active_receipt_rule_set(RuleSetName="newsletter")
    return topic


def test_the_mailto_unsubscribe_needs_a_receipt_rule_a_subscribed_topic_and_mx(project, moto, monkeypatch):
    config, tokens, queue_url = ses_project(project, moto, unsubscribe={"mailto": "unsubscribe@example.com"})
    records = aligned_dns(tokens) | {("example.com", "MX"): ["10 inbound-smtp.us-east-1.amazonaws.com."]}
    with DnsStub(records) as stub:
        use_dns(monkeypatch, stub)
        check = by_name(run_checks(config))["unsubscribe mailto"]
        assert check.status is Status.FAIL and "no active receipt rule set" in check.detail
        assert "create-receipt-rule" in check.hint
        topic = inbound_rule(moto, queue_url)
        checks = by_name(run_checks(config))
    assert checks["unsubscribe mailto"].status is Status.OK
    assert checks["unsubscribe mailto"].detail == f"unsubscribe@example.com: receipt rule → {topic}"
    assert "unsubscribe topic" not in checks
    assert checks["unsubscribe MX"].status is Status.OK


def test_a_rule_for_another_address_or_an_unsubscribed_topic_fails(project, moto, monkeypatch):
    config, tokens, queue_url = ses_project(project, moto, unsubscribe={"mailto": "unsubscribe@example.com"})
    with DnsStub(aligned_dns(tokens) | {("example.com", "MX"): ["10 mx.example.net."]}) as stub:
        use_dns(monkeypatch, stub)
        inbound_rule(moto, queue_url, address="someone-else@example.org", subscribe=False)
        checks = by_name(run_checks(config))
        assert checks["unsubscribe mailto"].status is Status.FAIL
        assert "no enabled receipt rule sends mail for unsubscribe@example.com" in checks["unsubscribe mailto"].detail
        aws(moto, "ses").create_receipt_rule(RuleSetName="newsletter", Rule={
            "Name": "all", "Enabled": True, "Recipients": ["example.com"],
            "Actions": [{"SNSAction": {"TopicArn": aws(moto, "sns").create_topic(Name="t2")["TopicArn"]}}]})
        checks = by_name(run_checks(config))
    assert checks["unsubscribe mailto"].status is Status.OK
    assert checks["unsubscribe topic"].status is Status.FAIL and "is not subscribed by the queue" in checks["unsubscribe topic"].detail
    assert checks["unsubscribe MX"].status is Status.FAIL and "inbound-smtp.us-east-1.amazonaws.com" in checks["unsubscribe MX"].hint


def test_without_the_setting_no_receipt_rule_is_checked(project, moto, monkeypatch):
    config, tokens, _ = ses_project(project, moto)
    with DnsStub(aligned_dns(tokens)) as stub:
        use_dns(monkeypatch, stub)
        checks = by_name(run_checks(config))
    assert "unsubscribe mailto" not in checks
