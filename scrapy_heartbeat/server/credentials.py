"""Who may write and who may read, and ``serve``'s credential options.

Three modes. Open (no option): anyone may do anything, for a laptop.
Simple (``--token``): one shared token opens everything. Scoped
(``--signing-key`` with ``--read-token``): a beat takes only its own
execution's token (:func:`scrapy_heartbeat.tokens.execution_token`), so a
crawler's container can write its own execution and nothing else; the read
API, the dashboard's data and ``/metrics`` take only the read token, which
never writes.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from scrapy_heartbeat.errors import ConfigError
from scrapy_heartbeat.tokens import check_signing_key, check_token, execution_token

#: 401 messages, the spec's error body's ``message``.
WRONG_TOKEN = "missing or wrong Authorization: Bearer token"
WRONG_READ_TOKEN = f"{WRONG_TOKEN}; reads take the receiver's read token"
WRONG_BEAT_TOKEN = (
    f"{WRONG_TOKEN} for this execution_id; a beat takes its execution's own token "
    "(scrapy-heartbeat token EXECUTION_ID)"
)


@dataclass(frozen=True)
class Credentials:
    """``token``: the simple mode's one token. ``signing_key`` and
    ``read_token``: the scoped mode. None of them: open."""

    token: bytes | None = None
    signing_key: bytes | None = None
    read_token: bytes | None = None

    @property
    def mode(self) -> str:
        if self.token is not None:
            return "simple"
        return "open" if self.signing_key is None else "scoped"

    def may_post(self, header: bytes | None) -> bool:
        """Before the body is read: may this request send a beat at all?
        (Scoped, the token is checked against the body's execution id.)"""
        if self.token is not None:
            return _same(bearer(header), self.token)
        return self.signing_key is None or bearer(header) is not None

    def may_beat(self, header: bytes | None, execution_id: str) -> bool:
        """May this request write ``execution_id`` (canonical)?"""
        if self.signing_key is None:
            return self.may_post(header)
        expected = execution_token(self.signing_key, execution_id).encode("ascii")
        return _same(bearer(header), expected)

    def may_read(self, header: bytes | None) -> bool:
        if self.token is not None:
            return _same(bearer(header), self.token)
        return self.read_token is None or _same(bearer(header), self.read_token)

    def describe(self) -> str:
        """One line for the log: what opens what."""
        if self.mode == "simple":
            return "credentials: one token (--token) for beats, reads and /metrics"
        if self.mode == "scoped":
            return (
                "credentials: beats take their execution's token (--signing-key); "
                "reads and /metrics the read token (--read-token)"
            )
        return "credentials: none; anyone who reaches this port may send beats and read them"


def bearer(header: bytes | None) -> bytes | None:
    """The token of an ``Authorization: Bearer`` header, or None. The
    scheme is case-insensitive (RFC 7235); the token is not."""
    scheme, _, given = (header or b"").strip().partition(b" ")
    token = given.strip()
    return token if scheme.lower() == b"bearer" and token else None


def _same(given: bytes | None, expected: bytes) -> bool:
    return given is not None and hmac.compare_digest(given, expected)


def credentials_from(
    token: str | None,
    signing_key: str | None,
    read_token: str | None,
    environ: Mapping[str, str],
) -> Credentials:
    """The credentials ``serve``'s options (else their environment
    variables) ask for, or :class:`ConfigError`, one line naming the option
    or variable: an empty or unusable value, or modes mixed."""
    (token, token_name), (key, key_name), (read, read_name) = (
        _option(token, "--token", "HEARTBEAT_TOKEN", environ),
        _option(signing_key, "--signing-key", "HEARTBEAT_SIGNING_KEY", environ),
        _option(read_token, "--read-token", "HEARTBEAT_READ_TOKEN", environ),
    )
    # Each value first: an empty one (an unset ${SECRET}) is named as such.
    simple = None if token is None else check_token(token, token_name).encode("ascii")
    secret = None if key is None else check_signing_key(key, key_name)
    reader = None if read is None else check_token(read, read_name).encode("ascii")
    if simple is not None and (secret is not None or reader is not None):
        raise ConfigError(
            f"{token_name} (one token for everything) cannot be combined with "
            f"{key_name if key is not None else read_name} (scoped credentials); keep one mode"
        )
    if secret is None and reader is None:
        return Credentials(token=simple)
    if secret is None:
        raise ConfigError(
            f"{read_name} without --signing-key (or HEARTBEAT_SIGNING_KEY) would let anyone "
            "send beats; set a signing key too"
        )
    if reader is None:
        raise ConfigError(
            f"{key_name} without --read-token (or HEARTBEAT_READ_TOKEN) would let anyone read "
            "every execution; set a read token too"
        )
    if hmac.compare_digest(reader, secret):
        raise ConfigError(
            f"{read_name} is the signing key: a reader could then forge every execution's "
            "token; use two different secrets"
        )
    return Credentials(signing_key=secret, read_token=reader)


def _option(
    value: str | None, flag: str, variable: str, environ: Mapping[str, str]
) -> tuple[str | None, str]:
    """The option's value (else its variable's), and the name to quote."""
    if value is not None:
        return value, flag
    return environ.get(variable), variable
