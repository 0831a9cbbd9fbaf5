"""Amazon SES: SES v2 ``SendEmail`` with Raw content (custom headers such as List-Unsubscribe
survive only in Raw), the account's limits from SES v1 ``get_send_quota`` through boto3 (it answers
on real SES and on moto; sesv2 ``get_account`` does not exist in moto).

``SendEmail`` is the one call made per reader, so it takes a lean path (``SesV2Sender``) instead of
boto3's generic call machinery (parameter handling, the event system, endpoint rules, the retry
handler, response parsing — about half of the client's CPU per message, and under the send job's
threads that CPU is GIL time): the restJson body is built directly (the raw message base64'd once
with ``binascii``), signed with botocore's own ``SigV4Auth``, and sent through the boto3 client's
own HTTP session (botocore's urllib3 pool: its proxies, CA bundle, timeouts and its mapping of
network failures to botocore exceptions). Everything is taken from the boto3 client: the endpoint
(``meta.endpoint_url``, as its endpoint rules resolved it: region, FIPS, dual-stack,
``endpoint_url``), the region and signing name, and the credentials from boto3's standard chain
(environment, ``[ses] profile``, SSO, instance role…), frozen again for each request so refreshable
credentials are refreshed when they near expiry. An error answer is parsed by botocore's rest-json
parser into the same ``ClientError`` the client would raise.

botocore's own retries are off: the send job retries with its own bounded backoff, and a retry
must be visible to the ledger. Every failure is classified here, once (``classify``), into a
``TransportError``.
"""

from __future__ import annotations

import binascii
import json
import re
from typing import Any

from newsletter.config import SesConfig
from newsletter.errors import TransportError
from newsletter.send.transports import SendLimits
from newsletter.send.transports.base import OutgoingMessage, Transport

RETRYABLE_CODES = {
    "Throttling", "ThrottlingException", "TooManyRequestsException", "RequestTimeout",
    "RequestTimeoutException", "ServiceUnavailable", "ServiceUnavailableException",
    "InternalFailure", "InternalServerError", "InternalError", "SlowDown", "LimitExceededException",
}
THROTTLE_CODES = {"Throttling", "ThrottlingException", "TooManyRequestsException", "SlowDown"}
FATAL_CODES = {
    "AccountSendingPausedException", "AccountSuspendedException", "SendingPausedException", "ConfigurationSetSendingPausedException",
    "MailFromDomainNotVerifiedException", "MailFromDomainNotVerified",
    "UnrecognizedClientException", "InvalidClientTokenId", "SignatureDoesNotMatch",
    "AccessDenied", "AccessDeniedException", "ExpiredToken", "ExpiredTokenException",
    "AuthFailure", "MissingAuthenticationToken", "NotFoundException",
    "ConfigurationSetDoesNotExist", "ConfigurationSetDoesNotExistException",
}
_HINTS = {
    "AccountSendingPausedException": "SES has paused sending for this account: see the SES console "
                                     "(reputation dashboard), then run the same command again to resume",
    "SendingPausedException": "sending is paused for this configuration set: re-enable it, then run "
                              "the same command again to resume",
}
_TAG_RE = re.compile(r"[^A-Za-z0-9_-]")


class SesTransport(Transport):
    name = "ses"

    def __init__(self, config: SesConfig, *, pool_size: int = 8):
        import boto3  # heavy: only when SES is actually used
        from botocore.config import Config as BotoConfig

        self.config = config
        try:
            session = boto3.Session(profile_name=config.profile or None, region_name=config.region or None)
        except Exception as err:  # botocore's ProfileNotFound and friends
            raise TransportError(f"SES: {err}", kind=TransportError.FATAL, code=type(err).__name__) from err
        # parameter_validation off: we build every request ourselves, and walking the ~60 KB
        # request for validation is measurable per message at 1,000 messages/s.
        boto_config = BotoConfig(retries={"total_max_attempts": 1}, max_pool_connections=max(10, pool_size + 2),
                                 connect_timeout=10, read_timeout=30, parameter_validation=False)
        endpoint = config.endpoint_url or None
        try:  # the clients resolve region and credentials now: a failing credential_process, no region…
            self._v2 = session.client("sesv2", endpoint_url=endpoint, config=boto_config)
            self._v1 = session.client("ses", endpoint_url=endpoint, config=boto_config)
            self._sender = SesV2Sender(session, self._v2)
        except Exception as err:
            raise classify(err) from err

    def describe(self) -> str:
        where = f" via {self.config.endpoint_url}" if self.config.endpoint_url else ""
        return f"ses (Amazon SES, region {self._v2.meta.region_name}{where})"

    def limits(self) -> SendLimits:
        """The account's max send rate and 24-hour quota. ``TransportError`` when SES refuses."""
        answer = self._call(self._v1.get_send_quota)
        max_24h = int(answer.get("Max24HourSend", 0))
        rate = float(answer.get("MaxSendRate", 0))
        return SendLimits(max_rate=rate if rate > 0 else None,
                          max_24h=None if max_24h < 0 else max_24h,  # -1: unlimited
                          sent_24h=int(answer.get("SentLast24Hours", 0)))

    def send(self, message: OutgoingMessage) -> str:
        fields: dict[str, Any] = {
            "FromEmailAddress": message.sender,
            "Destination": {"ToAddresses": list(message.recipients)},
        }
        if self.config.configuration_set:
            fields["ConfigurationSetName"] = self.config.configuration_set
        if message.slug:
            fields["EmailTags"] = [{"Name": "edition", "Value": _TAG_RE.sub("_", message.slug)[:256]}]
        return self._call(self._sender.send_email, fields=fields, raw=message.raw)

    def close(self) -> None:
        for client in (self._v2, self._v1):
            client.close()

    def _call(self, method, **kwargs) -> Any:
        """``method(**kwargs)``, any failure classified once (``classify``)."""
        try:
            return method(**kwargs)
        except Exception as err:
            raise classify(err) from err


class SesV2Sender:
    """SES v2 ``SendEmail`` with Raw content, the lean way (see the module's docstring): what
    boto3's ``client.send_email(**fields, Content={"Raw": {"Data": raw}})`` sends, on the wire,
    and the same exceptions it raises (``ClientError`` and its modelled subclasses for an error
    answer, botocore's network and credentials exceptions)."""

    OPERATION = "SendEmail"
    PATH = "/v2/email/outbound-emails"

    def __init__(self, session: Any, client: Any):
        import botocore
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSPreparedRequest, AWSRequest
        from botocore.exceptions import NoCredentialsError

        meta = client.meta
        self._client = client
        self._credentials = session.get_credentials()  # the chain's answer, as the client has it
        self._region = meta.region_name
        self._signing_name = meta.service_model.signing_name or "ses"
        self._url = meta.endpoint_url.rstrip("/") + self.PATH
        self._http = client._endpoint.http_session  # botocore's URLLib3Session: pool, proxies, certs
        self._operation = meta.service_model.operation_model(self.OPERATION)
        self._protocol = meta.service_model.resolved_protocol  # rest-json
        self._signer, self._request, self._prepared = SigV4Auth, AWSRequest, AWSPreparedRequest
        self._no_credentials = NoCredentialsError
        self._user_agent = " ".join(filter(None, (meta.config.user_agent or f"Botocore/{botocore.__version__}",
                                                  "newsletter-ses", meta.config.user_agent_extra)))

    def send_email(self, fields: dict[str, Any], raw: bytes) -> str:
        """Send; return SES's MessageId. ``fields``: the call's other parameters (JSON-ready)."""
        if self._credentials is None:
            raise self._no_credentials()
        # base64 has no character JSON escapes: the ~80 KB of it go in as they are
        head = json.dumps(fields, ensure_ascii=True, separators=(",", ":"))
        body = b"".join((head[:-1].encode("ascii"), b',"Content":{"Raw":{"Data":"',
                         binascii.b2a_base64(raw, newline=False), b'"}}}'))
        request = self._request(method="POST", url=self._url, data=body,
                                headers={"Content-Type": "application/json", "User-Agent": self._user_agent})
        # frozen per request: refreshable credentials (SSO, assumed roles, instance roles) renew
        # themselves here when they near expiry
        self._signer(self._credentials.get_frozen_credentials(), self._signing_name, self._region).add_auth(request)
        response = self._http.send(self._prepared("POST", self._url, dict(request.headers.items()), body,
                                                  stream_output=False))
        if response.status_code < 300:
            try:
                return str(json.loads(response.content)["MessageId"])
            except (ValueError, KeyError, TypeError) as err:  # not SES answering (a proxy's page…)
                from botocore.parsers import ResponseParserError

                raise ResponseParserError(f"HTTP {response.status_code} without a MessageId from {self._url}: "
                                          f"{response.content[:200]!r}") from err
        raise self._error(response)

    def _error(self, response: Any) -> Exception:
        """The ``ClientError`` (or its modelled subclass) boto3 raises for this answer."""
        from botocore.endpoint import convert_to_response_dict
        from botocore.parsers import create_parser

        parser = create_parser(self._protocol)  # a fresh one per answer, as botocore's endpoint does
        parsed = parser.parse(convert_to_response_dict(response, self._operation), self._operation.output_shape)
        code = parsed.get("Error", {}).get("Code") or "Unknown"
        return self._client.exceptions.from_code(code)(parsed, self.OPERATION)


def classify(err: Exception) -> TransportError:
    """The one place a boto3/botocore exception becomes a classified ``TransportError``."""
    from botocore import exceptions as bx

    if isinstance(err, bx.ClientError):
        return _classify_client_error(err)
    if isinstance(err, (bx.NoCredentialsError, bx.PartialCredentialsError, bx.ProfileNotFound)):
        return TransportError(f"SES: no usable AWS credentials ({err}); configure them as for the AWS CLI "
                              "(environment, ~/.aws/credentials or [ses] profile)",
                              kind=TransportError.FATAL, code=type(err).__name__)
    if isinstance(err, (bx.EndpointConnectionError, bx.ConnectionError, bx.HTTPClientError,
                        bx.ReadTimeoutError, bx.ConnectTimeoutError)):
        return TransportError(f"SES: network error: {err}", kind=TransportError.RETRYABLE,
                              code=type(err).__name__)
    if isinstance(err, bx.BotoCoreError):
        return TransportError(f"SES: {err}", kind=TransportError.FATAL, code=type(err).__name__)
    return TransportError(f"SES: unexpected {type(err).__name__}: {err}", kind=TransportError.FATAL,
                          code=type(err).__name__)


def _classify_client_error(err: Any) -> TransportError:
    info = err.response.get("Error", {})
    code = str(info.get("Code", "Unknown"))
    text = str(info.get("Message", "")) or code
    status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    lowered = text.lower()

    def error(kind: str, message: str) -> TransportError:
        throttled = code in THROTTLE_CODES or status == 429 or "rate exceeded" in lowered
        return TransportError(message, kind=kind, code=code, response=err.response, throttled=throttled)

    if "daily message quota" in lowered or "quota exceeded" in lowered:
        return error(TransportError.FATAL, f"SES: the 24-hour sending quota is used up ({text}); "
                     "run the same command again when the quota allows, to resume")
    if code in RETRYABLE_CODES or status == 429 or status >= 500 or "rate exceeded" in lowered:
        return error(TransportError.RETRYABLE, f"SES: {code}: {text}")
    if code in FATAL_CODES or status in (401, 403):
        hint = _HINTS.get(code, "fix the account or configuration, then run the same command again to resume")
        return error(TransportError.FATAL, f"SES: {code}: {text} — {hint}")
    if code in ("MessageRejected", "MessageRejectedException") and _sender_problem(lowered):
        return error(TransportError.FATAL, f"SES: {code}: {text} — verify the sender identity in SES, "
                     "then run the same command again to resume")
    # MessageRejected, BadRequest (an unusable address) and other 4xx: this message only.
    return error(TransportError.PERMANENT, f"SES: {code}: {text}")


def _sender_problem(lowered: str) -> bool:
    """MessageRejected names the sender when the From identity is not verified; a sandboxed
    account's unverified *recipient* is only this reader's problem."""
    return ("authority to send from" in lowered or "from address" in lowered
            or "mail from" in lowered or "sender" in lowered)
