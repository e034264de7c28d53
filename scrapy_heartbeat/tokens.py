"""Scoped credentials, shared by both sides: an execution's token, derived
from the receiver's signing key, and the form a token or key must take.

An execution's token is the hex HMAC-SHA256 of its execution id (canonical,
lower-case) under the signing key. The platform that starts a crawler's
container derives it (:func:`execution_token`, ``scrapy-heartbeat token``)
and hands that container only its own token, so a container can write its
own execution and nothing else; the receiver derives it again for each beat,
so it stores no secret per execution.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from scrapy_heartbeat.errors import ConfigError
from scrapy_heartbeat.payload import canonical_uuid

__all__ = ["MIN_SIGNING_KEY", "check_signing_key", "check_token", "execution_token"]

#: The shortest signing key taken, in characters. A crawler holds its own
#: token and knows its execution id: with a short key it could guess the key
#: offline and forge every other execution's token.
MIN_SIGNING_KEY = 32
#: What a bearer token may hold: visible ASCII, which any HTTP client sends
#: unchanged (no spaces, no line breaks, nothing an encoding could change).
_TOKEN_RE = re.compile(r"[\x21-\x7e]+")
KEY_HINT = "generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


def execution_token(key: str | bytes, execution_id: str) -> str:
    """The bearer token that lets a crawler send beats for ``execution_id``
    to a receiver started with ``--signing-key key``: 64 hex digits. The id
    may be spelled in either case. Raises :class:`ConfigError` for a key too
    short or an id that is not a UUID."""
    secret = check_signing_key(key, "key")
    canonical = canonical_uuid(execution_id.strip() if isinstance(execution_id, str) else None)
    if canonical is None:
        raise ConfigError(
            f"execution id {str(execution_id)[:100]!r} is not a UUID; pass the platform's "
            "execution id, e.g. '550e8400-e29b-41d4-a716-446655440000'"
        )
    return hmac.new(secret, canonical.encode("ascii"), hashlib.sha256).hexdigest()


def check_signing_key(key: str | bytes, name: str) -> bytes:
    """``key``'s bytes without surrounding whitespace (a secret file's
    trailing newline is not part of it), or :class:`ConfigError` naming
    ``name`` (never quoting the key)."""
    if isinstance(key, str):
        try:
            # The bytes as given: an environment variable that is not UTF-8
            # arrives as surrogate escapes, and must sign as the same bytes.
            raw = key.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise ConfigError(f"{name} is not valid text; {KEY_HINT}") from None
    elif isinstance(key, bytes):
        raw = key
    else:
        raise ConfigError(f"{name} is a {type(key).__name__}, not a string; {KEY_HINT}")
    raw = raw.strip()
    if not raw:
        raise ConfigError(f"{name} is empty (is the secret it comes from unset?); {KEY_HINT}")
    if len(raw) < MIN_SIGNING_KEY:
        raise ConfigError(
            f"{name} is shorter than {MIN_SIGNING_KEY} characters, short enough for a crawler "
            f"holding its own token to guess it; {KEY_HINT}"
        )
    return raw


def check_token(token: object, name: str) -> str:
    """``token`` without surrounding whitespace, or :class:`ConfigError`
    naming ``name`` (never quoting the token): empty, or characters other
    than visible ASCII."""
    if not isinstance(token, str):
        raise ConfigError(f"{name} is a {type(token).__name__}, not a string; set it to the token")
    text = token.strip()
    if not text:
        raise ConfigError(
            f"{name} is empty (is the secret it comes from unset?); set it to the token, "
            "or unset it"
        )
    if not _TOKEN_RE.fullmatch(text):
        raise ConfigError(
            f"{name} holds spaces, control or non-ASCII characters, which a bearer token "
            "cannot; use letters, digits and punctuation only"
        )
    return text
