"""``/status.php``: the JSON with which ownCloud/Nextcloud clients recognise a server.

Contract: ``GET``/``HEAD /status.php`` answers 200 with ``installed``,
``maintenance``, ``needsDbUpgrade``, ``version`` (four numbers),
``versionstring``, ``edition`` and ``productname``, without credentials;
other methods 405. The version claims the ownCloud 10.11 WebDAV dialect that
davbox speaks (clients enable features by it); the product name is davbox.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from davbox import __version__
from davbox.http import status_line

#: The server generation clients should treat davbox as (ownCloud 10's WebDAV API).
SERVER_VERSION = "10.11.0.0"
VERSION_STRING = "10.11.0"


def status_fields() -> dict[str, Any]:
    """What status.php says (also the ``core.status`` of the capabilities)."""
    return {
        "installed": True,
        "maintenance": False,
        "needsDbUpgrade": False,
        "version": SERVER_VERSION,
        "versionstring": VERSION_STRING,
        "edition": "Community",
        "productname": "davbox",
        "product": "davbox",
        "productversion": __version__,
        "extendedSupport": False,
    }


def status_body() -> bytes:
    return json.dumps(status_fields()).encode()


def status_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    method = environ.get("REQUEST_METHOD", "")
    if method not in ("GET", "HEAD"):
        body = b"405 Method Not Allowed: status.php answers GET\n"
        start_response(
            status_line(405),
            [
                ("Allow", "GET, HEAD"),
                ("Content-Type", "text/plain"),
                ("Content-Length", str(len(body))),
            ],
        )
        return [body]
    body = status_body()
    start_response(
        status_line(200),
        [
            ("Content-Type", "application/json; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [b""] if method == "HEAD" else [body]
