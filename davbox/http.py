"""Small HTTP helpers shared by the dispatcher and the middlewares.

Contract: ``plain_response`` answers with a one-line text body
``"<code> <phrase>: <reason>"``. When a request body was announced but not read
(an early refusal of an upload), the answer carries ``Connection: close`` and
the body is never read: a 403 to a 10 GB PUT costs nothing, and cheroot does
not try to drain a stalled or dead connection.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

# Request ids name a request in logs, audit records and error pages; they are
# not secrets, only unique, so they come from a generator seeded once from the
# OS (os.urandom per request costs more than the rest of a small GET here).
_ids = random.Random(os.urandom(32))


def new_request_id() -> str:
    """A fresh 16-hex-digit request id (unique in practice, not unpredictable)."""
    return f"{_ids.getrandbits(64):016x}"


def status_line(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return f"{code} Error"


def has_unread_body(environ: dict[str, Any]) -> bool:
    """True if the client announced a request body that nobody has read to its end."""
    if environ.get("wsgidav.all_input_read"):
        return False
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    return chunked or length > 0


def close_if_body_unread(environ: dict[str, Any], headers: list[tuple[str, str]]) -> None:
    """Add ``Connection: close`` (and stop WsgiDAV from reading the body) if it is unread."""
    if has_unread_body(environ):
        environ["wsgidav.all_input_read"] = 1  # WsgiDAV would otherwise read it all
        if not any(name.lower() == "connection" for name, _ in headers):
            headers.append(("Connection", "close"))


def plain_response(
    environ: dict[str, Any],
    start_response: Callable[..., Any],
    code: int,
    reason: str,
    headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    body = f"{status_line(code)}: {reason}\n".encode()
    all_headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        *(headers or []),
    ]
    close_if_body_unread(environ, all_headers)
    start_response(status_line(code), all_headers)
    return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")


def drop_invalid_range(environ: dict[str, Any]) -> None:
    """Ignore a ``Range`` that RFC 9110 says to ignore but WsgiDAV misreads.

    ``bytes=5-3`` (last before first) is invalid, ``bytes=-0`` asks for no
    bytes at all: both are dropped, so the whole file is sent (200), as RFC
    9110 section 14.2 allows. (WsgiDAV 4.4 answered them with wrong bytes or
    a Content-Range beyond the file.)
    """
    value = environ.get("HTTP_RANGE")
    if value is None:
        return
    match = _RANGE.fullmatch(value)
    if match is None:
        return
    first, last = match.groups()
    if (first and last and int(first) > int(last)) or (not first and last and int(last) == 0):
        del environ["HTTP_RANGE"]
