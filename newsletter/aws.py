"""boto3 clients built from ``[ses]`` settings. boto3 is imported here, lazily, on first use.

Credentials come from boto3's standard chain (environment, shared files, instance role);
``ses.profile`` picks a named profile and ``ses.endpoint_url`` points every client at a local
SES/SQS-compatible endpoint (moto in the tests).
"""

from __future__ import annotations

from typing import Any

from newsletter.config import Config

# Generous enough for a 20 s long poll, short enough to notice a dead endpoint.
_READ_TIMEOUT = 30


def aws_client(config: Config, service: str) -> Any:
    """A boto3 client for ``service`` ("ses", "sesv2", "sqs") in the configured region."""
    import boto3
    from botocore.config import Config as BotoConfig

    session = boto3.session.Session(profile_name=config.ses.profile or None)
    return session.client(
        service,
        region_name=config.ses.region or None,
        endpoint_url=config.ses.endpoint_url or None,
        config=BotoConfig(read_timeout=_READ_TIMEOUT, connect_timeout=10,
                          retries={"max_attempts": 3, "mode": "standard"}),
    )


def error_code(err: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (or the exception's class name)."""
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", "")) or type(err).__name__
    return type(err).__name__


def is_retryable(err: BaseException) -> bool:
    """Network trouble, throttling and server errors are worth another try; the rest is not."""
    from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, ReadTimeoutError

    if isinstance(err, (BotoConnectionError, ReadTimeoutError)):
        return True
    if isinstance(err, ClientError):
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = error_code(err)
        return status >= 500 or code in ("Throttling", "ThrottlingException", "RequestThrottled",
                                         "ServiceUnavailable", "InternalError")
    return False
