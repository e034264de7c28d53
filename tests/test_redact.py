"""What may be shown of a URL (``scrapy_heartbeat/redact.py``), over any
text: a webhook's or an API's secrets, in its userinfo, path or query,
never reach a log line."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from scrapy_heartbeat.redact import url_origin

#: A secret: long enough never to appear by chance in a host or a scheme.
SECRETS = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ23456789", min_size=12, max_size=30)
HOSTS = st.sampled_from(["hooks.example.com", "127.0.0.1", "[::1]", "xn--bcher-kva.example"])
TEXT = st.text(max_size=40)


@given(
    scheme=st.sampled_from(["http", "https", "HTTP", "ftp", ""]),
    host=HOSTS,
    port=st.one_of(st.none(), st.integers(0, 70000)),
    secrets=st.tuples(SECRETS, SECRETS, SECRETS, SECRETS),
    tail=TEXT,
)
def test_the_origin_shows_no_userinfo_path_or_query(
    scheme: str, host: str, port: int | None, secrets: tuple[str, str, str, str], tail: str
) -> None:
    user, password, path, query = secrets
    authority = f"{user}:{password}@{host}" + ("" if port is None else f":{port}")
    url = f"{scheme}://{authority}/services/{path}?token={query}{tail}"
    shown = url_origin(url)
    for secret in secrets:
        assert secret not in shown
    assert "\n" not in shown and "\x1b" not in shown


@given(TEXT)
def test_any_text_gives_one_line_without_userinfo(text: str) -> None:
    shown = url_origin(text)
    assert "\n" not in shown and "\r" not in shown and "@" not in shown
