"""The SES transport's lean SendEmail path (``SesV2Sender``) against real local endpoints: the moto
server and tests/fake_ses.py. What it sends must be what boto3's ``send_email`` sends (same body,
a valid SigV4 signature, credentials from boto3's standard chain) and every answer must be
classified exactly as the boto3 client's exception for the same answer is."""

from __future__ import annotations

import base64
import json
import socket
import sys
import threading
from pathlib import Path

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotoConfig
from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import ClientError

from newsletter.config import Config, SesConfig
from newsletter.errors import TransportError
from newsletter.send.transports import open_transport
from newsletter.send.transports.ses import SesTransport, classify
from conftest import free_port
from fake_ses import FakeSes
from test_transport import READER, edition_message, moto_raw_messages


@pytest.fixture
def fake_ses():
    server = FakeSes().start()
    server.configure(keep_request=True)
    yield server
    server.stop()


def ses_config(url: str, **values) -> Config:
    return Config(root=Path("/tmp"), from_="AI Daily <news@example.com>", ses=SesConfig(endpoint_url=url, **values))


def signing_key(request: dict) -> str:
    """The access key id named in the request's Authorization header."""
    auth = request["headers"]["authorization"]
    return auth.split("Credential=", 1)[1].split("/", 1)[0]


def assert_signed(request: dict, access_key: str, secret_key: str, token: str | None = None) -> None:
    """Recompute the SigV4 signature of the request as received (botocore's signer, the secret
    we expect it to be signed with, the request's own timestamp) and compare."""
    headers = request["headers"]
    auth = headers["authorization"]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={access_key}/") and "/us-east-1/ses/aws4_request" in auth
    signed = auth.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
    assert {"host", "x-amz-date", "content-type"} <= set(signed)
    if token is not None:
        assert headers["x-amz-security-token"] == token and "x-amz-security-token" in signed
    again = AWSRequest(method=request["method"], url=f"http://{headers['host']}{request['path']}",
                       data=request["body"].encode(), headers={name: headers[name] for name in signed})
    signer = SigV4Auth(ReadOnlyCredentials(access_key, secret_key, token), "ses", "us-east-1")
    again.context["timestamp"] = headers["x-amz-date"]
    canonical = signer.canonical_request(again)
    expected = signer.signature(signer.string_to_sign(again, canonical), again)
    assert auth.endswith(f"Signature={expected}")


# -- what goes on the wire --------------------------------------------------------------------------

def test_moto_stores_exactly_the_bytes_we_sent(moto):
    boto3.client("ses", region_name="us-east-1", endpoint_url=moto).verify_email_identity(
        EmailAddress="news@example.com")
    config = ses_config(moto)
    message = edition_message(config, READER)
    transport = open_transport(config, "ses")
    message_id = transport.send(message)
    [received] = moto_raw_messages(moto)
    assert received["id"] == message_id
    assert received["raw_data"].encode() == message.raw  # byte for byte (CRLF, base64'd parts)
    assert received["source"] == "news@example.com"
    transport.close()


def test_the_body_is_what_boto3_sends_and_it_is_signed(fake_ses):
    config = ses_config(fake_ses.url, configuration_set="events")
    message = edition_message(config, READER, slug="2025-10-14.ai/daily")
    transport = open_transport(config, "ses")
    ours = transport.send(message)
    client = boto3.client("sesv2", region_name="us-east-1", endpoint_url=fake_ses.url,
                          config=BotoConfig(retries={"total_max_attempts": 1}))
    theirs = client.send_email(FromEmailAddress=message.sender, Destination={"ToAddresses": list(message.recipients)},
                               Content={"Raw": {"Data": message.raw}}, ConfigurationSetName="events",
                               EmailTags=[{"Name": "edition", "Value": "2025-10-14_ai_daily"}])["MessageId"]
    ours_in, theirs_in = fake_ses.messages
    assert (ours_in["id"], theirs_in["id"]) == (ours, theirs)
    assert json.loads(ours_in["request"]["body"]) == json.loads(theirs_in["request"]["body"])
    assert base64.b64decode(json.loads(ours_in["request"]["body"])["Content"]["Raw"]["Data"]) == message.raw
    assert ours_in["request"]["headers"]["content-type"] == "application/json"
    assert int(ours_in["request"]["headers"]["content-length"]) == len(ours_in["request"]["body"])
    assert_signed(ours_in["request"], "testing", "testing")  # conftest's environment credentials
    assert_signed(theirs_in["request"], "testing", "testing")  # the check itself holds for boto3's
    transport.close()


def test_a_tampered_request_fails_the_signature_check(fake_ses):
    """The signature check above can fail: a body changed after signing, or another secret."""
    config = ses_config(fake_ses.url)
    open_transport(config, "ses").send(edition_message(config, READER))
    request = fake_ses.messages[0]["request"]
    with pytest.raises(AssertionError):
        assert_signed(request, "testing", "not-the-secret")
    with pytest.raises(AssertionError):
        assert_signed(dict(request, body=request["body"].replace("wei@", "wai@")), "testing", "testing")


# -- every answer classified as boto3's own exception for it is -------------------------------------

FAULTS = ["throttle", "5xx", "503", "reject", "paused", "quota", "unverified", "credentials"]


@pytest.mark.parametrize("fault", FAULTS)
def test_each_error_answer_is_the_clients_exception_and_classified_the_same(fake_ses, fault):
    config = ses_config(fake_ses.url)
    message = edition_message(config, READER)
    transport = open_transport(config, "ses")
    fake_ses.configure(queue=[fault])
    with pytest.raises(TransportError) as ours:
        transport.send(message)
    client = boto3.client("sesv2", region_name="us-east-1", endpoint_url=fake_ses.url,
                          config=BotoConfig(retries={"total_max_attempts": 1}))
    fake_ses.configure(queue=[fault])
    with pytest.raises(ClientError) as boto_err:
        client.send_email(FromEmailAddress=message.sender, Destination={"ToAddresses": list(message.recipients)},
                          Content={"Raw": {"Data": message.raw}})
    theirs = classify(boto_err.value)
    cause = ours.value.__cause__
    assert type(cause).__name__ == type(boto_err.value).__name__  # the modelled class (MessageRejected…)
    assert isinstance(cause, ClientError) and cause.response["Error"] == boto_err.value.response["Error"]
    assert (ours.value.kind, ours.value.code, ours.value.throttled, ours.value.message) == \
           (theirs.kind, theirs.code, theirs.throttled, theirs.message)
    assert ours.value.response["ResponseMetadata"]["HTTPStatusCode"] == \
           boto_err.value.response["ResponseMetadata"]["HTTPStatusCode"]
    assert transport.send(message).startswith("fake-")  # the next call goes through on the same pool
    transport.close()


def test_closed_port_is_a_retryable_network_error():
    config = ses_config(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TransportError) as err:
        open_transport(config, "ses").send(edition_message(config, READER))
    assert err.value.kind == "retryable" and not err.value.throttled
    assert "network error" in err.value.message and err.value.code == "EndpointConnectionError"


def test_a_connection_dropped_without_answer_is_retryable_and_the_pool_recovers(fake_ses):
    config = ses_config(fake_ses.url)
    transport = open_transport(config, "ses")
    transport.send(edition_message(config, READER))  # a kept-alive connection now in the pool
    fake_ses.configure(queue=["drop"])
    with pytest.raises(TransportError) as err:
        transport.send(edition_message(config, READER))
    assert err.value.kind == "retryable" and "network error" in err.value.message
    assert transport.send(edition_message(config, READER)).startswith("fake-")
    assert fake_ses.faults_answered == {"drop": 1}


def test_a_server_that_accepts_and_hangs_up_is_retryable():
    """A listener that accepts and closes at once (a half-dead load balancer)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    done = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        config = ses_config(f"http://127.0.0.1:{listener.getsockname()[1]}")
        with pytest.raises(TransportError) as err:
            open_transport(config, "ses").send(edition_message(config, READER))
        assert err.value.kind == "retryable"
    finally:
        done.set()
        thread.join(5)
        listener.close()


def test_an_answer_that_is_not_ses_stops_the_send(fake_ses):
    config = ses_config(fake_ses.url)
    fake_ses.configure(queue=["garbage"])
    with pytest.raises(TransportError) as err:
        open_transport(config, "ses").send(edition_message(config, READER))
    assert err.value.kind == "fatal" and "without a MessageId" in err.value.message


# -- credentials from boto3's standard chain --------------------------------------------------------

@pytest.fixture
def aws_home(tmp_path, monkeypatch):
    """A temp HOME with an empty ~/.aws and no credentials in the environment (and no instance
    metadata lookups: nothing leaves the machine)."""
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE",
                "AWS_SHARED_CREDENTIALS_FILE", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return home


def test_credentials_of_the_ses_profile_in_the_aws_config_file(fake_ses, aws_home):
    (aws_home / ".aws" / "config").write_text(
        "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = default-secret\n\n"
        "[profile newsletter]\naws_access_key_id = AKIANEWSLETTER\naws_secret_access_key = nl-secret\n"
        "region = us-east-1\n", encoding="utf-8")
    config = ses_config(fake_ses.url, profile="newsletter")
    open_transport(config, "ses").send(edition_message(config, READER))
    assert_signed(fake_ses.messages[0]["request"], "AKIANEWSLETTER", "nl-secret")
    default = ses_config(fake_ses.url)  # no [ses] profile: the default one
    open_transport(default, "ses").send(edition_message(default, READER))
    assert_signed(fake_ses.messages[1]["request"], "AKIADEFAULT", "default-secret")


def test_credentials_from_the_environment_win_over_the_config_file(fake_ses, aws_home, monkeypatch):
    (aws_home / ".aws" / "credentials").write_text(
        "[default]\naws_access_key_id = AKIAFILE\naws_secret_access_key = file-secret\n", encoding="utf-8")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-session-token")
    config = ses_config(fake_ses.url)
    open_transport(config, "ses").send(edition_message(config, READER))
    assert_signed(fake_ses.messages[0]["request"], "AKIAENV", "env-secret", token="env-session-token")


def test_no_credentials_anywhere_is_fatal_with_a_hint(fake_ses, aws_home):
    config = ses_config(fake_ses.url)
    with pytest.raises(TransportError) as err:
        open_transport(config, "ses").send(edition_message(config, READER))
    assert err.value.kind == "fatal" and "no usable AWS credentials" in err.value.message
    assert fake_ses.calls == 0  # nothing was sent unsigned


def test_a_missing_profile_is_fatal(fake_ses, aws_home):
    with pytest.raises(TransportError) as err:
        open_transport(ses_config(fake_ses.url, profile="nope"), "ses")
    assert err.value.kind == "fatal" and "nope" in err.value.message


def credential_process(aws_home, profile: str, body: str) -> None:
    """``[profile PROFILE]`` with a credential_process: a script that counts its runs in ``n``
    (1 first), has ``soon`` (five minutes from now, an expiry) and then runs ``body``."""
    counter = aws_home / f"calls-{profile}"
    script = aws_home / f"creds-{profile}.py"
    script.write_text(
        "import datetime, json, pathlib, sys\n"
        f"p = pathlib.Path({str(counter)!r})\n"
        "n = int(p.read_text()) + 1 if p.exists() else 1\n"
        "p.write_text(str(n))\n"
        "soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)\n" + body,
        encoding="utf-8")
    (aws_home / ".aws" / "config").write_text(
        f"[profile {profile}]\ncredential_process = {sys.executable} {script}\n", encoding="utf-8")


def test_expiring_credentials_are_refreshed_between_requests(fake_ses, aws_home):
    """A credential_process whose credentials are always about to expire: botocore refreshes
    them on each request (they are frozen per request), each request signed with the new ones."""
    credential_process(aws_home, "rotating",
                       "print(json.dumps({'Version': 1, 'AccessKeyId': f'AKIAROTATED{n}', 'SecretAccessKey': f'secret-{n}',\n"
                       "                  'SessionToken': f'token-{n}', 'Expiration': soon.isoformat()}))\n")
    config = ses_config(fake_ses.url, profile="rotating")
    transport = open_transport(config, "ses")
    assert isinstance(transport, SesTransport)
    transport.send(edition_message(config, READER))
    transport.send(edition_message(config, READER))
    first, second = (m["request"] for m in fake_ses.messages)
    n1, n2 = int(signing_key(first).removeprefix("AKIAROTATED")), int(signing_key(second).removeprefix("AKIAROTATED"))
    assert n2 > n1
    assert_signed(first, f"AKIAROTATED{n1}", f"secret-{n1}", token=f"token-{n1}")
    assert_signed(second, f"AKIAROTATED{n2}", f"secret-{n2}", token=f"token-{n2}")


def test_the_cli_and_the_transport_module_import_no_aws_library():
    """CLI start-up: boto3, botocore and urllib3 are imported only when SES is used."""
    import subprocess

    code = ("import sys, newsletter.cli, newsletter.send.job, newsletter.send.transports.ses; "
            "print([m for m in ('boto3', 'botocore', 'urllib3') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_credentials_that_can_no_longer_be_refreshed_stop_the_send(fake_ses, aws_home):
    """The credential_process fails from its second run on (an SSO session that ended): the
    request that needs fresh credentials is not sent, and the error is fatal, with its reason."""
    credential_process(aws_home, "once",
                       "if n > 1:\n"
                       "    sys.exit('the session has ended: log in again')\n"
                       "print(json.dumps({'Version': 1, 'AccessKeyId': 'AKIAONCE', 'SecretAccessKey': 's',\n"
                       "                  'SessionToken': 't', 'Expiration': soon.isoformat()}))\n")
    config = ses_config(fake_ses.url, profile="once")
    transport = open_transport(config, "ses")
    with pytest.raises(TransportError) as err:
        transport.send(edition_message(config, READER))
    assert err.value.kind == "fatal" and "log in again" in err.value.message
    assert fake_ses.calls == 0


def test_credentials_that_cannot_be_had_at_all_are_one_fatal_error(fake_ses, aws_home):
    """A credential_process that fails from the start: opening the transport says so in one
    classified error (no traceback from inside boto3)."""
    (aws_home / ".aws" / "config").write_text(
        f"[profile broken]\ncredential_process = {sys.executable} -c \"import sys; sys.exit('token expired')\"\n",
        encoding="utf-8")
    with pytest.raises(TransportError) as err:
        open_transport(ses_config(fake_ses.url, profile="broken"), "ses")
    assert err.value.kind == "fatal" and "token expired" in err.value.message
