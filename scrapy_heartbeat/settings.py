"""The ``HEARTBEAT_*`` settings: every default in one place, validated once.

:func:`load_config` is a pure function of the raw setting values and the
environment, so every rule here is tested without a crawl. A value that cannot
be used produces one log line naming the setting, the value and the fix; the
crawl itself is never stopped by a bad heartbeat setting.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit

from scrapy_heartbeat.errors import ConfigError
from scrapy_heartbeat.ids import check_execution_id
from scrapy_heartbeat.payload import MAX_CONTAINER_ID
from scrapy_heartbeat.redact import redact_url, utf8_text
from scrapy_heartbeat.tokens import check_token

__all__ = ["DEFAULTS", "ConfigError", "HeartbeatConfig", "MissingBaseUrl", "load_config"]

logger = logging.getLogger(__name__)

#: Every setting this package reads, with its default. ``None`` means "look
#: elsewhere" (environment, spider argument, host name), as documented.
DEFAULTS: dict[str, Any] = {
    "HEARTBEAT_ENABLED": True,
    "HEARTBEAT_ALL_COMMANDS": False,  # True: fetch, parse, shell, check, bench report too
    "HEARTBEAT_API_BASE_URL": None,  # else env API_BASE_URL
    "HEARTBEAT_EXECUTION_ID": None,  # else env EXECUTION_ID, spider arg, uuid4
    "HEARTBEAT_CONTAINER_ID": None,  # else env HOSTNAME, socket.gethostname()
    "HEARTBEAT_INTERVAL": 30.0,
    "HEARTBEAT_MIN_INTERVAL": 10.0,
    "HEARTBEAT_MAX_INTERVAL": 60.0,
    "HEARTBEAT_TIMEOUT": 10.0,
    "HEARTBEAT_CLOSE_TIMEOUT": 30.0,
    "HEARTBEAT_SHUTDOWN_TIMEOUT": 5.0,  # the close's budget after SIGTERM/SIGINT
    "HEARTBEAT_RETRY_TIMES": 3,
    "HEARTBEAT_RETRY_DELAY": 5.0,
    "HEARTBEAT_TOKEN": None,  # else env HEARTBEAT_TOKEN
    "HEARTBEAT_HEADERS": {},
    "HEARTBEAT_TLS_VERIFY": True,
    "HEARTBEAT_DEBUG": None,  # else env DEBUG == "true"
    "HEARTBEAT_COMPLETED_REASONS": [
        "finished",
        "closespider_itemcount",
        "closespider_pagecount",
        "closespider_timeout",
    ],
    "HEARTBEAT_STAGE_FORMAT": "{stage} ({crawled}/{total})",
    "HEARTBEAT_STAGE_LABELS": {
        "running": "爬取中",
        "paused": "已暂停",
        "completed": "已完成",
        "failed": "失败",
        "worker_finished": "本进程已结束",
    },
    "HEARTBEAT_STRIP_QUERY": False,
    "HEARTBEAT_PROXY": None,  # direct; a proxy URL, or "env" for HTTP(S)_PROXY/NO_PROXY
    "HEARTBEAT_SHARED": None,  # None: on with scrapy-redis's scheduler or HEARTBEAT_REDIS_URL
    "HEARTBEAT_REDIS_URL": None,  # else scrapy-redis's REDIS_URL / REDIS_HOST / ...
    "HEARTBEAT_REDIS_TTL": 7 * 24 * 3600,
}

#: The longest request timeout we accept, seconds (the spec's is 10).
MAX_TIMEOUT = 300.0
#: The widest field HEARTBEAT_STAGE_FORMAT may ask for (the stage is cut at 200).
MAX_FORMAT_WIDTH = 200
STAGE_FIELDS = ("stage", "status", "crawled", "total", "percentage", "items")


class MissingBaseUrl(ConfigError):
    """Neither ``HEARTBEAT_API_BASE_URL`` nor ``API_BASE_URL`` is set."""


@dataclass(frozen=True)
class HeartbeatConfig:
    api_base_url: str
    container_id: str
    interval: float
    timeout: float
    close_timeout: float
    shutdown_timeout: float
    retry_times: int
    retry_delay: float
    headers: dict[str, str] = field(default_factory=dict)
    token: str | None = None  # sent as Authorization: Bearer
    tls_verify: bool | str = True
    debug: bool = False
    completed_reasons: frozenset[str] = frozenset()
    stage_format: str = DEFAULTS["HEARTBEAT_STAGE_FORMAT"]
    stage_labels: dict[str, str] = field(default_factory=dict)
    strip_query: bool = False
    execution_id: str | None = None  # None: resolved from the spider later
    proxy: str | None = None
    shared: bool | None = None  # None: decided by the scheduler (scrapy-redis) or redis_url
    redis_url: str | None = None
    redis_url_refused: bool = False  # HEARTBEAT_REDIS_URL set, but not a Redis URL
    redis_ttl: int = DEFAULTS["HEARTBEAT_REDIS_TTL"]
    all_commands: bool = False


def _as_bool(name: str, value: Any, default: bool, problems: list[str]) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off"}:
        return False
    problems.append(
        f"{name}={value!r} is not a boolean; use True or False (using the default, {default})"
    )
    return default


def _as_number(
    name: str,
    value: Any,
    default: float,
    problems: list[str],
    *,
    minimum: float = 0.0,
    maximum: float = 86_400.0,
    integer: bool = False,
) -> float:
    kind = "a whole number" if integer else "a number of seconds"
    bounds = f"from {minimum:g} to {maximum:g}"
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
        if integer:
            if not number.is_integer():
                raise ValueError
            number = int(number)
    except (TypeError, ValueError, OverflowError):
        problems.append(
            f"{name}={value!r} is not {kind}; set it to {kind} {bounds} "
            f"(using the default, {default:g})"
        )
        return default
    if math.isnan(number) or not minimum <= number <= maximum:
        problems.append(
            f"{name}={value!r} is out of range; set it to {kind} {bounds} "
            f"(using the default, {default:g})"
        )
        return default
    return number


def check_base_url(value: Any, name: str = "HEARTBEAT_API_BASE_URL") -> str:
    """The base URL without a trailing slash, or :class:`ConfigError` saying
    what is wrong with it (credentials never quoted)."""
    example = "e.g. 'http://data-platform-api:8000'"
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} is not a string; set it to the platform's base URL, {example}")
    url = value.strip().rstrip("/")
    # Never quoted: credentials, nor a query (it may hold a token).
    shown = redact_url(url.split("?", 1)[0].split("#", 1)[0])
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:
        # Bytes that are not UTF-8 (an environment variable, read as U+DCxx):
        # the API would answer 404 at every beat and never name the setting.
        shown = shown.encode("utf-8", "backslashreplace").decode("utf-8")
        raise ConfigError(
            f"{name}={shown!r} has bytes that are not UTF-8; write it in UTF-8 or "
            f"percent-encoded, {example}"
        ) from None
    parts = _split(url)
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{name}={shown!r} is not an http(s) URL; set it with its scheme and host, {example}"
        )
    host = parts.netloc.rsplit("@", 1)[-1]
    if any(c.isspace() for c in host):
        raise ConfigError(f"{name}={shown!r} has a space in its host; remove it")
    if _port(parts) is None:
        raise ConfigError(f"{name}={shown!r} has no valid port (1-65535); fix it, {example}")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ConfigError(
            f"{name}={shown!r} has a query or fragment; the base URL is scheme, host, port "
            f"and an optional path prefix, {example}"
        )
    return url


def check_headers(value: Any, name: str = "HEARTBEAT_HEADERS") -> dict[str, str]:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            raise ConfigError(
                f"{name} is a string that is not a JSON object; set it "
                'to a dict such as {"Authorization": "Bearer <token>"}'
            ) from None
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{name} is a {type(value).__name__}, not a mapping; set "
            'it to a dict such as {"Authorization": "Bearer <token>"}'
        )
    headers: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, (str, bytes)):
            # Never echo the value: headers carry credentials.
            raise ConfigError(
                f"{name}[{key!r}] must map a string name to a string value; fix that entry"
            )
        text = item.decode("latin-1") if isinstance(item, bytes) else item
        try:
            key.encode("ascii")
            text.encode("latin-1")
        except UnicodeEncodeError:
            raise ConfigError(
                f"{name}[{key!r}] has characters HTTP headers cannot carry (names are ASCII, "
                "values Latin-1); percent- or base64-encode that value"
            ) from None
        if any(c in "\r\n" for c in key + text):
            raise ConfigError(f"{name}[{key!r}] has a line break; remove it")
        headers[key] = text
    return headers


def _check_tls_verify(value: Any, problems: list[str]) -> bool | str:
    if isinstance(value, str) and value.strip().lower() not in {
        "1",
        "0",
        "true",
        "false",
        "yes",
        "no",
        "on",
        "off",
    }:
        path = os.path.expanduser(value.strip())
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise ConfigError(
                f"HEARTBEAT_TLS_VERIFY={value!r} is not a readable CA bundle "
                "file; point it at a PEM file, or use True or False"
            )
        return path
    return _as_bool("HEARTBEAT_TLS_VERIFY", value, True, problems)


def _check_str_mapping(name: str, value: Any, problems: list[str]) -> dict[str, str]:
    default: dict[str, str] = DEFAULTS[name]
    if isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return {**default, **value}
    problems.append(
        f"{name}={value!r} is not a dict of strings; set it like {default!r} (using the default)"
    )
    return dict(default)


def _check_stage_format(value: Any, problems: list[str]) -> str:
    default: str = DEFAULTS["HEARTBEAT_STAGE_FORMAT"]
    sample = dict.fromkeys(STAGE_FIELDS, 0)
    try:
        if not isinstance(value, str):
            raise TypeError
        # A width such as {stage:>999999999} would build a gigabyte per beat:
        # look at every field's spec before formatting anything.
        for _, _, spec, _ in string.Formatter().parse(value):
            # A nested field ({stage:>{crawled}0}) would make the width the
            # crawl's own numbers: refused, like a width too large.
            if spec and (
                "{" in spec or any(int(n) > MAX_FORMAT_WIDTH for n in re.findall(r"\d+", spec))
            ):
                raise ValueError
        value.format(**sample)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError):
        problems.append(
            f"HEARTBEAT_STAGE_FORMAT={value!r} is not a format string over "
            f"{{{'}, {'.join(STAGE_FIELDS)}}} with widths up to {MAX_FORMAT_WIDTH}; "
            f"fix it (using the default, {default!r})"
        )
        return default
    return value


class _Reader:
    """Reads raw setting values, noting what cannot be used in ``problems``."""

    def __init__(self, get: Callable[[str], Any], problems: list[str]) -> None:
        self.get = get
        self.problems = problems

    def raw(self, name: str) -> Any:
        value = self.get(name)
        return DEFAULTS[name] if value is None else value

    def boolean(self, name: str) -> bool:
        default: bool = DEFAULTS[name]
        return _as_bool(name, self.raw(name), default, self.problems)

    def optional_boolean(self, name: str) -> bool | None:
        value = self.get(name)
        return None if value is None else _as_bool(name, value, False, self.problems)

    def number(self, name: str, minimum: float, maximum: float = 86_400.0) -> float:
        return _as_number(
            name,
            self.raw(name),
            DEFAULTS[name],
            self.problems,
            minimum=minimum,
            maximum=maximum,
            integer=name in _INTEGERS,
        )


#: The number settings whose bounds are fixed: (name, minimum, maximum).
_NUMBERS = (
    ("HEARTBEAT_TIMEOUT", 0.001, MAX_TIMEOUT),
    ("HEARTBEAT_CLOSE_TIMEOUT", 0.0, 3600.0),
    ("HEARTBEAT_SHUTDOWN_TIMEOUT", 0.0, 3600.0),
    ("HEARTBEAT_RETRY_TIMES", 0, 100),
    ("HEARTBEAT_RETRY_DELAY", 0.0, 3600.0),
    ("HEARTBEAT_REDIS_TTL", 1, 365 * 24 * 3600),
)
_INTEGERS = frozenset({"HEARTBEAT_RETRY_TIMES", "HEARTBEAT_REDIS_TTL"})


def load_config(
    get: Callable[[str], Any], environ: Mapping[str, str] | None = None
) -> HeartbeatConfig | None:
    """Build the configuration from raw setting values.

    ``get(name)`` returns a setting's raw value or ``None`` when unset.
    Returns ``None`` when the extension is switched off by
    ``HEARTBEAT_ENABLED``. Raises :class:`ConfigError` when reporting is
    impossible (no or bad base URL, unusable headers, proxy or CA bundle, a
    malformed execution id). Values that merely cannot be used are logged as
    errors and replaced by their default.
    """
    env = os.environ if environ is None else environ
    problems: list[str] = []
    read = _Reader(get, problems)
    if not read.boolean("HEARTBEAT_ENABLED"):
        return None
    base_url = _base_url(get, env)
    execution_id = get("HEARTBEAT_EXECUTION_ID") or env.get("EXECUTION_ID") or None
    redis_given = get("HEARTBEAT_REDIS_URL")
    redis_url = _check_redis_url(redis_given, problems)
    numbers = {name: read.number(name, low, high) for name, low, high in _NUMBERS}
    warnings: list[str] = []
    token = crawler_token(get("HEARTBEAT_TOKEN"), env, warnings)
    config = HeartbeatConfig(
        api_base_url=base_url,
        container_id=container_id(get("HEARTBEAT_CONTAINER_ID"), env, problems),
        interval=_interval(read),
        timeout=numbers["HEARTBEAT_TIMEOUT"],
        close_timeout=numbers["HEARTBEAT_CLOSE_TIMEOUT"],
        shutdown_timeout=numbers["HEARTBEAT_SHUTDOWN_TIMEOUT"],
        retry_times=int(numbers["HEARTBEAT_RETRY_TIMES"]),
        retry_delay=numbers["HEARTBEAT_RETRY_DELAY"],
        headers=check_headers(get("HEARTBEAT_HEADERS")),
        token=token,
        tls_verify=_check_tls_verify(read.raw("HEARTBEAT_TLS_VERIFY"), problems),
        debug=_debug(read, env),
        completed_reasons=_completed_reasons(read.raw("HEARTBEAT_COMPLETED_REASONS"), problems),
        stage_format=_check_stage_format(read.raw("HEARTBEAT_STAGE_FORMAT"), problems),
        stage_labels=_check_str_mapping(
            "HEARTBEAT_STAGE_LABELS", read.raw("HEARTBEAT_STAGE_LABELS"), problems
        ),
        strip_query=read.boolean("HEARTBEAT_STRIP_QUERY"),
        execution_id=(
            None
            if execution_id is None
            else check_execution_id(execution_id, "HEARTBEAT_EXECUTION_ID")
        ),
        proxy=check_proxy(get("HEARTBEAT_PROXY")),
        shared=read.optional_boolean("HEARTBEAT_SHARED"),
        redis_url=redis_url,
        redis_url_refused=bool(redis_given) and redis_url is None,
        redis_ttl=int(numbers["HEARTBEAT_REDIS_TTL"]),
        all_commands=read.boolean("HEARTBEAT_ALL_COMMANDS"),
    )
    for problem in problems:
        logger.error("scrapy-heartbeat: %s", problem)
    for warning in warnings:
        logger.warning("scrapy-heartbeat: %s", warning)
    return config


def crawler_token(value: Any, env: Mapping[str, str], warnings: list[str]) -> str | None:
    """``HEARTBEAT_TOKEN``: the setting, else the environment variable. An
    empty or blank value counts as not set (an unset ``${SECRET}`` in a
    compose file gives one), noted in ``warnings`` when no token results;
    one HTTP cannot carry raises :class:`ConfigError`."""
    sources = (
        ("the HEARTBEAT_TOKEN setting", value),
        ("the HEARTBEAT_TOKEN environment variable", env.get("HEARTBEAT_TOKEN")),
    )
    empty = []
    for name, given in sources:
        if given is None:
            continue
        if isinstance(given, str) and not given.strip():
            empty.append(name)
            continue
        return check_token(given, name)
    if empty:
        warnings.append(
            f"{' and '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty (is the secret "
            "it comes from unset?); sending beats without a token"
        )
    return None


def _base_url(get: Callable[[str], Any], env: Mapping[str, str]) -> str:
    """``HEARTBEAT_API_BASE_URL``, else ``API_BASE_URL``, checked."""
    base_url = get("HEARTBEAT_API_BASE_URL") or env.get("API_BASE_URL")
    if not base_url:
        raise MissingBaseUrl(
            "neither HEARTBEAT_API_BASE_URL nor the API_BASE_URL environment "
            "variable is set; set one to the platform's base URL to send heartbeats"
        )
    return check_base_url(base_url)


def _interval(read: _Reader) -> float:
    """``HEARTBEAT_INTERVAL``, clamped into the platform's bounds."""
    low = read.number("HEARTBEAT_MIN_INTERVAL", 0.0)  # 0: no lower bound
    high = read.number("HEARTBEAT_MAX_INTERVAL", low)
    interval = read.number("HEARTBEAT_INTERVAL", 0.001)
    if low <= interval <= high:
        return interval
    clamped = min(max(interval, low), high)
    logger.warning(
        "HEARTBEAT_INTERVAL=%(value)g is outside the platform's bounds "
        "[%(low)g, %(high)g] s (HEARTBEAT_MIN_INTERVAL/HEARTBEAT_MAX_INTERVAL); "
        "using %(clamped)g s",
        {"value": interval, "low": low, "high": high, "clamped": clamped},
    )
    return clamped


def _debug(read: _Reader, env: Mapping[str, str]) -> bool:
    if read.get("HEARTBEAT_DEBUG") is None:
        return env.get("DEBUG", "").strip().lower() == "true"
    return _as_bool("HEARTBEAT_DEBUG", read.get("HEARTBEAT_DEBUG"), False, read.problems)


def _completed_reasons(reasons: Any, problems: list[str]) -> frozenset[str]:
    if isinstance(reasons, str):
        reasons = [r.strip() for r in reasons.split(",") if r.strip()]
    if not isinstance(reasons, (list, tuple, set, frozenset)) or not all(
        isinstance(r, str) for r in reasons
    ):
        problems.append(
            f"HEARTBEAT_COMPLETED_REASONS={reasons!r} is not a list of finish "
            "reasons; set it like ['finished'] (using the default)"
        )
        reasons = DEFAULTS["HEARTBEAT_COMPLETED_REASONS"]
    return frozenset(reasons)


def container_id(
    value: Any, env: Mapping[str, str], problems: list[str], name: str = "HEARTBEAT_CONTAINER_ID"
) -> str:
    """``HEARTBEAT_CONTAINER_ID``, else ``HOSTNAME``, else the host name, as
    UTF-8 text of at most 255 characters (an environment variable may hold
    bytes that are not UTF-8: they become U+FFFD)."""
    name = name if value else "HOSTNAME"
    text = str(value or env.get("HOSTNAME") or socket.gethostname())
    clean = "".join(c if c.isprintable() else "\ufffd" for c in utf8_text(text))
    if clean != text:
        problems.append(
            f"{name} has bytes or characters that are not printable UTF-8; sending "
            f"{clean[:MAX_CONTAINER_ID]!r} instead (set HEARTBEAT_CONTAINER_ID to plain text)"
        )
    return clean[:MAX_CONTAINER_ID]


def check_proxy(value: Any) -> str | None:
    """``HEARTBEAT_PROXY``: None or "" (direct), "env", or an http(s) or socks URL."""
    if value is None or value == "":
        return None
    if value == "env":
        return "env"
    text = value.strip() if isinstance(value, str) else ""
    parts = _split(text)
    if (
        parts is not None
        and parts.scheme in ("http", "https", "socks5", "socks5h")
        and parts.hostname
        and _port(parts) is not None
    ):
        return text
    shown = redact_url(value) if isinstance(value, str) else repr(value)
    raise ConfigError(
        f"HEARTBEAT_PROXY={shown!r} is not a proxy URL; set it like 'http://proxy:3128', "
        "or to 'env' to use HTTP(S)_PROXY and NO_PROXY, or leave it unset to go direct"
    )


def _check_redis_url(value: Any, problems: list[str]) -> str | None:
    if value is None or value == "":
        return None
    text = value.strip() if isinstance(value, str) else ""
    parts = _split(text)
    if (
        parts is not None
        and parts.scheme in ("redis", "rediss", "unix")
        and _port(parts) is not None
    ):
        return text
    shown = redact_url(value) if isinstance(value, str) else repr(value)
    problems.append(
        f"HEARTBEAT_REDIS_URL={shown!r} is not a redis://, rediss:// or unix:// URL; "
        "set it like 'redis://redis:6379/0' (this worker reports its own numbers meanwhile, "
        "and never ends the execution)"
    )
    return None


def _split(url: str) -> SplitResult | None:
    """``url``'s parts, or None where it cannot be parsed (``http://[::1``)."""
    try:
        parts = urlsplit(url)
        parts.hostname  # noqa: B018 - raises ValueError for a bad IPv6 literal
    except ValueError:
        return None
    return parts


def _port(parts: SplitResult) -> int | Literal[True] | None:
    """The URL's port, True when it has none, None when it is not one (``abc``, 99999)."""
    try:
        port = parts.port
    except ValueError:
        return None
    return True if port is None else port
