"""Transports: where finished messages go (local outbox, Amazon SES, SMTP).

``open_transport(config, name)`` is the one way callers get one. Every transport raises only
``TransportError`` (classified retryable / permanent / fatal) from ``send``.
"""
