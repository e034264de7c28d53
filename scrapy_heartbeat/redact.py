"""What may be shown of outside text: URLs without their secrets, exceptions
and client text on one line.

Every log line, error message and terminal line of this package that quotes a
URL, an exception or text a client sent goes through one of these, so the
rules live here once.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

#: The longest exception text quoted in a log line.
MAX_SUMMARY = 200


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``, for logs.

    Works on text that is not a valid URL too (``http://u:p@[::1``, a
    password with an unescaped ``/``): whatever comes before the last ``@``
    ahead of the query is taken for credentials, so a path holding an ``@``
    is shown shorter rather than a secret shown whole.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    end = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, end)
    if at < 0:
        return url
    return f"{scheme}{sep}***@{rest[at + 1 :]}"


def url_origin(url: str) -> str:
    """Only ``scheme://host[:port]`` of ``url``, and ``/…`` when it has
    more: a webhook's secret may be in its path (Slack's are), its query or
    its userinfo, none of which is shown. Text that is not a URL with a host
    (a relative redirect) is shown as ``…``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "…"
    if not parts.scheme or not parts.hostname:
        return "…"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    shown = printable(f"{parts.scheme}://{host}{'' if port is None else f':{port}'}")
    more = parts.path not in ("", "/") or parts.query or parts.fragment
    return f"{shown}/…" if more else shown


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``url`` without ``user:password@``, and the user and password
    (percent-decoded), for a client that sends them as a header instead."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    return parts._replace(netloc=host).geturl(), unquote(user), unquote(password) or None


def describe(exc: BaseException) -> str:
    """``Type: message`` on one line, at most :data:`MAX_SUMMARY` characters
    of message: no traceback, nothing that spans lines."""
    text = printable(" ".join(str(exc).split()))[:MAX_SUMMARY]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def utf8_text(text: str) -> str:
    """``text`` as valid UTF-8: bytes that were not UTF-8 in an environment
    variable or on a command line (Python's surrogate escapes), and lone
    surrogates, become U+FFFD."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")


def printable(text: object) -> str:
    """``text`` on one line, its control characters escaped: outside text
    must neither forge output lines nor reach a terminal as escapes."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text)
    )
