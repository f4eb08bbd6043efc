"""The web pages of davbox (jinja2 templates with autoescaping).

For now: the start page at ``/``, telling people where WebDAV lives and how
to connect. Login, 2FA and share pages are added by later releases.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

import davbox

_env = Environment(
    loader=PackageLoader("davbox.admin_ui", "templates"),
    autoescape=select_autoescape(["html"]),
)


class StartPage:
    """WSGI app for ``GET /``: a page that names the WebDAV address."""

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        scheme = environ.get("wsgi.url_scheme", "http")
        host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "localhost")
        body = (
            _env.get_template("start.html")
            .render(dav_url=f"{scheme}://{host}/dav/", version=davbox.__version__)
            .encode()
        )
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/html; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"),
                ("X-Content-Type-Options", "nosniff"),
            ],
        )
        return [body] if environ["REQUEST_METHOD"] != "HEAD" else [b""]
